"""Conditional flows end to end, from spec text (label, vector and image contexts; couplings of
every kind, rg, conditional priors), float64 with randomised parameters:

* change of variables against the autograd Jacobian, round trip, the context moving the density;
* ``sample(return_log_prob=True)`` / ``inverse_with_log_prob`` against ``log_prob`` on the samples
  (one inverse pass), also for unconditional flows;
* fused equals unfused (≤ 1e-12), with the label context folded into the mlp conditioners;
* ``torch.compile(fullgraph=True)`` of the forward and sample paths (no graph break);
* bad contexts through the model API are ContextErrors; parameter counts equal the compiler's.
"""

from __future__ import annotations

import math

import pytest
import torch
from ctxtest import info, randomize
from flowtest import jacobian, randomize_parameters

import flowdsl
from flowdsl.compiler.kinds import get_layer
from flowdsl.errors import ContextError
from flowdsl.runtime.layers import layer_lowering
from flowdsl.runtime.layers.coupling import Coupling
from flowdsl.runtime.layers.rg import RGFlow

LABEL = """
flow clabel {
    input image(channels=2, height=4, width=4)
    context label(classes=3)
    actnorm
    conv1x1
    coupling(hidden=8)
    coupling(hidden=8, net=mlp, mask=checkerboard)
    rg(kernel=2) {
        disentangler { coupling(kind=affine, net=mlp, mask=checkerboard, hidden=8) }
        decimator { coupling(kind=spline, net=conv, mask=checkerboard, hidden=8, bins=3) }
    }
    squeeze
    coupling(hidden=8, kind=spline, net=resnet, depth=1, bins=4)
    split
    coupling(hidden=8, kind=additive, net=mlp)
    prior gaussian(conditional=true)
}
"""

VECTOR = """
flow cvector {
    input vector(dim=4)
    context vector(dim=2)
    coupling(hidden=8)
    permute(kind=reverse)
    coupling(hidden=8, kind=spline, mask=checkerboard, bins=4)
    coupling(hidden=8, context=false)
    prior laplace(scale=0.8, conditional=true)
}
"""

IMAGE = """
flow cimage {
    input image(channels=1, height=8, width=8)
    context image(channels=1, height=4, width=4)
    coupling(hidden=8, mask=checkerboard, kind=spline, bins=4)
    coupling(hidden=4, net=mlp, mask=checkerboard)
    rg(kernel=4) {
        disentangler { coupling(kind=affine, net=mlp, mask=checkerboard, hidden=8) }
        decimator { coupling(kind=spline, net=conv, mask=checkerboard, hidden=8, bins=3) }
    }
    squeeze
    coupling(hidden=8)
    squeeze
    coupling(hidden=8, net=resnet, depth=1, kind=additive)
    prior gaussian(learned=true)
}
"""

UNCONDITIONAL = """
flow plain {
    input image(channels=1, height=4, width=4)
    squeeze
    actnorm
    conv1x1
    coupling(hidden=8)
    split
    coupling(hidden=8, kind=spline, net=mlp, mask=checkerboard, bins=4)
    prior laplace(learned=true)
}
"""

SPECS = {"label": LABEL, "vector": VECTOR, "image": IMAGE}
B = 3


def context_for(model, batch, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if model.context_kind == "label":
        return torch.arange(batch) % model.context_classes
    return torch.randn(batch, *model.context_shape, generator=gen, dtype=torch.float64)


def build(text, seed=0):
    """Compiled in float64, data-dependent init done, every parameter randomised (coupling nets,
    prior and encoder strongly: their zero starts would hide the context)."""
    model = flowdsl.compile(flowdsl.parse(text), seed=seed).double()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, *model.input_shape, generator=gen, dtype=torch.float64)
    c = context_for(model, B, seed) if model.context_kind else None
    model.train()
    with torch.no_grad():
        model(x, context=c)
        randomize_parameters(model, seed=seed)
        for i, m in enumerate(model.modules()):
            if isinstance(m, Coupling):
                randomize(m, seed + i)
        randomize(model.prior, seed + 100, scale=0.3)
        if model.context_encoder is not None:
            randomize(model.context_encoder, seed + 200, scale=0.8)
    return model.eval(), x, c


@pytest.fixture(scope="module", params=list(SPECS), ids=list(SPECS))
def built(request):
    return build(SPECS[request.param])


def test_api_attributes_and_parameter_count(built):
    model, x, c = built
    spec = model.spec
    assert model.context_kind == spec.context.kind
    assert model.context_shape == tuple(spec.context.shape)
    assert model.context_classes == (spec.context.classes if spec.context.kind == "label" else None)
    assert sum(p.numel() for p in model.parameters()) == model.graph.model_params()
    graph = model.graph
    for nid, step in zip(graph.chain, model.steps):  # the modules read the context where the graph says
        node = graph.node(nid)
        reads = getattr(node.args, "context", None) is True or any(
            graph.node(b).args.context for chain in node.body_chains.values() for b in chain
        )
        assert step.uses_context == reads, nid
        assert (nid in graph.context_nodes) == (getattr(node.args, "context", None) is True)
    if model.context_kind == "vector":  # coupling(context=false) opts out
        assert not model.steps[-1].uses_context
    if model.context_kind in ("label", "image"):  # the rg bodies read it too
        assert any(isinstance(s, RGFlow) and s.uses_context for s in model.steps)


def test_coupling_param_count_formula_with_a_context():
    """The compiler's coupling formula with context=true against the lowered module, on random
    arguments, shapes and contexts."""
    kind = get_layer("coupling")
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(40):
        pick = lambda seq: seq[int(torch.randint(len(seq), (1,), generator=gen))]  # noqa: E731
        shape = pick([(6,), (3,), (4, 4, 4), (3, 2, 6), (1, 4, 4)])
        raw = {
            "kind": pick(["affine", "additive", "spline"]),
            "hidden": pick([3, 8]),
            "net": pick([None, "mlp"] + (["conv", "resnet"] if len(shape) == 3 else [])),
            "depth": pick([1, 2]),
            "mask": pick(["channel", "checkerboard"]),
            "context": True,
        }
        if shape[0] < 2 and raw["mask"] == "channel":
            continue
        args = kind.Args.model_validate(raw, strict=False)
        ctx = pick([info("label", classes=4), info("vector", dim=3), info("image", channels=2, height=2, width=2)])
        module = layer_lowering("coupling")(args, shape, None, context=ctx)
        assert module.uses_context
        assert sum(p.numel() for p in module.parameters()) == kind.param_count(args, shape), (raw, shape)
        checked += 1
    assert checked >= 20


def test_change_of_variables_round_trip_and_the_context_matters(built):
    model, x, c = built
    shape = model.input_shape
    n = math.prod(shape)
    with torch.no_grad():
        z, logdet = model(x, context=c)
        assert (model.inverse(z, context=c) - x).abs().max() <= 1e-10
        lp = model.log_prob(x, context=c)
    for i in range(2):
        ci = c[i : i + 1]
        jac = jacobian(lambda v: model(v.reshape(1, *shape), context=ci)[0].reshape(-1), x[i].reshape(-1))
        ref = torch.linalg.slogdet(jac.reshape(n, n))[1]
        assert abs(float(logdet[i] - ref)) <= 1e-10 * max(1.0, abs(float(ref)))
    other = (c + 1) % model.context_classes if model.context_kind == "label" else c.flip(0) * 1.5
    with torch.no_grad():
        assert (model.log_prob(x, context=other) - lp).abs().max() > 1e-3


def test_sample_with_log_prob_is_one_inverse_pass(built):
    model, x, c = built
    torch.manual_seed(1)
    with torch.no_grad():
        s, lp = model.sample(B, temperature=0.8, context=c, return_log_prob=True)
        assert s.shape == (B, *model.input_shape)
        ref = model.log_prob(s, context=c)
        z, _ = model(x, context=c)
        xi, lpi = model.inverse_with_log_prob(z, context=c)
    assert ((lp - ref).abs() / ref.abs().clamp_min(1.0)).max() <= 1e-10
    assert (xi - x).abs().max() <= 1e-10
    assert (lpi - model.log_prob(x, context=c)).abs().max() <= 1e-10


def test_fused_equals_unfused(built):
    model, x, c = built
    fused = model.fuse()
    assert fused.context_shape == model.context_shape
    report = fused.fusion_report()
    if model.context_kind == "label":
        assert "label context folded" in report
        assert any(getattr(m, "folded", False) for m in fused.modules())
    with torch.no_grad():
        z, ld = model(x, context=c)
        fz, fld = fused(x, context=c)
        assert (fz - z).abs().max() <= 1e-12 and (fld - ld).abs().max() <= 1e-12
        assert (fused.inverse(z, context=c) - x).abs().max() <= 1e-12
        lp = model.log_prob(x, context=c)
        assert ((fused.log_prob(x, context=c) - lp).abs() / lp.abs().clamp_min(1)).max() <= 1e-12
        xi, lpi = fused.inverse_with_log_prob(z, context=c)
        assert (xi - x).abs().max() <= 1e-12 and ((lpi - lp).abs() / lp.abs().clamp_min(1)).max() <= 1e-12
        torch.manual_seed(4)
        a = model.sample(2, context=c[:1], return_log_prob=True)
        torch.manual_seed(4)
        b = fused.sample(2, context=c[:1], return_log_prob=True)
    assert (a[0] - b[0]).abs().max() <= 1e-12 and ((a[1] - b[1]).abs() / a[1].abs().clamp_min(1)).max() <= 1e-12


# small flows for torch.compile (dynamo unrolls every layer: the specs above take minutes)
COMPILE = {
    "label": """
flow clabel {
    input image(channels=2, height=4, width=4)
    context label(classes=3)
    coupling(hidden=4)
    coupling(hidden=4, net=mlp)
    prior gaussian(conditional=true)
}
""",
    "image": """
flow cimage {
    input image(channels=2, height=4, width=4)
    context image(channels=1, height=2, width=2)
    coupling(hidden=4, net=resnet, depth=1)
    prior laplace(conditional=true)
}
""",
}


@pytest.mark.parametrize("kind,fused", [("label", False), ("label", True), ("image", True)])
def test_compile_fullgraph_forward_and_sample(kind, fused):
    """fullgraph=True raises at the first graph break; the label range check (a host read) is
    skipped under compilation, everything else is traced. The fused label flow is compiled with
    dynamic=True: a new batch size (of x and the context together) does not recompile."""
    model, x, c = build(COMPILE[kind])
    m = model.fuse() if fused else model
    torch._dynamo.reset()

    def both(x, c):
        s, slp = m.sample(x.shape[0], temperature=0.7, context=c, return_log_prob=True)
        return m.log_prob(x, context=c), s, slp

    dynamic = kind == "label" and fused
    compiled = torch.compile(both, fullgraph=True, backend="eager", dynamic=dynamic)
    with torch.no_grad():
        for b in (3, 5) if dynamic else (3,):
            xb = torch.randn(b, *m.input_shape, dtype=torch.float64)
            cb = context_for(m, b, seed=b)
            with torch._dynamo.config.patch(error_on_recompile=b != 3):
                lp, s, slp = compiled(xb, cb)
            assert s.shape == xb.shape
            assert (lp - m.log_prob(xb, context=cb)).abs().max() <= 1e-10
            assert ((slp - m.log_prob(s, context=cb)).abs() / slp.abs().clamp_min(1)).max() <= 1e-10


def test_bad_contexts_through_the_model_api():
    model, x, c = build(LABEL)
    declared = "context label(classes=3)"
    cases = [
        (lambda: model(x), "no context was given"),
        (lambda: model(x, context=c.double()), "float64 tensor"),
        (lambda: model.log_prob(x, context=torch.tensor([0, 3, 1])), "label 3, outside 0…2"),
        (lambda: model.inverse(x, context=c[:2]), "batch of 2 contexts for 3 examples"),
        (lambda: model.sample(2, context=torch.ones(2, 3, dtype=torch.long)), "shape (2, 3)"),
        (lambda: model.fuse()(x, context=torch.tensor([-1, 0, 1])), "label -1"),
    ]
    for call, words in cases:
        with pytest.raises(ContextError) as e:
            call()
        assert declared in str(e.value) and words in str(e.value), str(e.value)
    # one label for the whole batch, as an int, a 0-d tensor or a batch of 1
    with torch.no_grad():
        ref = model.log_prob(x, context=torch.full((B,), 2))
        for one in (2, torch.tensor(2), torch.tensor([2])):
            assert torch.equal(model.log_prob(x, context=one), ref)
    plain = flowdsl.compile(flowdsl.parse(UNCONDITIONAL))
    with pytest.raises(ContextError, match="declares no context"):
        plain(torch.rand(2, 1, 4, 4), context=torch.tensor([1, 2]))
    assert plain.context_shape is None and plain.context_kind is None and plain.context_classes is None


def test_unconditional_sample_with_log_prob():
    model, x, _ = build(UNCONDITIONAL)
    with torch.no_grad():
        s, lp = model.sample(4, temperature=0.9, return_log_prob=True)
        ref = model.log_prob(s)
        z, _ = model(x)
        xi, lpi = model.fuse().inverse_with_log_prob(z)
    assert ((lp - ref).abs() / ref.abs().clamp_min(1.0)).max() <= 1e-10
    assert (xi - x).abs().max() <= 1e-12 and (lpi - model.log_prob(x)).abs().max() <= 1e-10
