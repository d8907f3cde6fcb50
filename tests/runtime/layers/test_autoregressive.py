"""``autoregressive`` (MADE-based MAF/IAF): the layer against independent references.

In float64 with randomised parameters, for every kind × order × direction: the round trip, the
log-det against slogdet of the autograd Jacobian (≤ 1e-10), the Jacobian's triangular structure in
the chosen order (the autoregressive property: ∂z_i/∂x_j = 0 for every j after i, and not all
zero before), the one-pass ``inverse_with_log_det`` and the frozen (fused) form (≤ 1e-12). Spline
inputs exactly at ±bound, at ±1e4 and at bin edges; a hypothesis property test with random knots
and extreme parameters (no NaN/inf either way on [−1e4, 1e4]); which direction is one pass;
torch.compile(fullgraph=True) without graph breaks; onnxruntime parity ≤ 1e-4 both ways.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch._dynamo
from flowtest import compiled, jacobian, randomize_parameters
from hypothesis import given, settings
from hypothesis import strategies as st

import flowdsl
from flowdsl.runtime.layers import autoregressive as ar_mod
from flowdsl.runtime.layers._made import made_parallel
from flowdsl.runtime.layers._rq_spline import spline_params
from flowdsl.runtime.layers.autoregressive import Autoregressive

F64 = torch.float64
D, BINS, BOUND = 5, 5, 2.0
CASES = list(itertools.product(["affine", "spline"], ["natural", "reverse", "random"], ["forward", "inverse"]))
IDS = [f"{k}-{o}-{d}" for k, o, d in CASES]


def make(kind, order, direction, d=D, hidden=12, depth=2, seed=3, scale=0.6, context=0) -> Autoregressive:
    """A float64 layer with every parameter drawn N(0, scale²) (the output layer too, so the
    transform is far from the identity and every entry depends on the earlier ones)."""
    layer = Autoregressive(d, kind, hidden, depth, order, seed, direction, BINS, BOUND, context).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64) * scale)
    return layer.eval()


def inputs(n=6, d=D, seed=0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64) * 1.5


def jac(layer, x1: torch.Tensor) -> torch.Tensor:
    return jacobian(lambda v: layer(v.unsqueeze(0))[0].squeeze(0), x1)


def check_layer(layer, x, tol=1e-10):
    """Round trip, Jacobian log-det and inverse_with_log_det of a float64 layer at x (B, D)."""
    with torch.no_grad():
        z, ld = layer(x)
        xb = layer.inverse(z)
        xi, ldi = layer.inverse_with_log_det(z)
    scale = x.abs().clamp(min=1.0)  # entrywise: an entry at 1e4 does not loosen the others
    assert float(((xb - x).abs() / scale).max()) <= tol
    assert float(((xi - xb).abs() / scale).max()) <= 1e-13
    assert float((ldi - ld).abs().max() / ld.abs().max().clamp(min=1.0)) <= tol
    for i in range(x.shape[0]):
        ref = torch.linalg.slogdet(jac(layer, x[i]))[1]
        assert float((ld[i] - ref).abs() / ref.abs().clamp(min=1.0)) <= tol, (i, float(ld[i]), float(ref))
    return z, ld


@pytest.mark.parametrize("kind, order, direction", CASES, ids=IDS)
def test_round_trip_logdet_triangular_jacobian_and_fused_form(kind, order, direction):
    layer = make(kind, order, direction)
    x = inputs() if kind == "affine" else torch.tanh(inputs()) * 0.9 * BOUND  # inside the spline's bound
    z, ld = check_layer(layer, x)
    # the autoregressive property, in the chosen order: z_i depends on x_j only for m(j) ≤ m(i)
    m = torch.tensor(layer.made.in_deg)
    many = torch.tanh(inputs(n=32, seed=5)) * 0.9 * BOUND
    js = torch.stack([jac(layer, row) for row in many])  # (32, D, D)
    after = m[None, :] > m[:, None]
    before = m[None, :] < m[:, None]
    assert float(js[:, after].abs().max()) == 0.0
    assert float(js.abs().amax(0)[before].min()) > 1e-6, "every entry depends on each earlier one"
    assert float(js.diagonal(dim1=1, dim2=2).min()) > 0  # increasing in its own entry
    # the frozen (fused) form: same numbers to rounding, in both directions
    frozen = layer.frozen()
    with torch.no_grad():
        fz, fld = frozen(x)
        fx, fldi = frozen.inverse_with_log_det(z)
        assert float((fz - z).abs().max()) <= 1e-12 * float(z.abs().max().clamp(min=1.0))
        assert float((fld - ld).abs().max()) <= 1e-12 * float(ld.abs().max().clamp(min=1.0))
        xb = layer.inverse(z)
        assert float((frozen.inverse(z) - xb).abs().max()) <= 1e-12 * float(xb.abs().max().clamp(min=1.0))
        assert float((fx - xb).abs().max()) <= 1e-12 * float(xb.abs().max().clamp(min=1.0))
        assert float((fldi - ld).abs().max()) <= 1e-12 * float(ld.abs().max().clamp(min=1.0))


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_one_entry_and_deep_wide_nets(kind, direction):
    """D = 1 (θ from the biases alone: no hidden unit feeds the only entry) and depth 3 with fewer
    hidden units than entries (H < D − 1: some degrees have no unit)."""
    check_layer(make(kind, "natural", direction, d=1, hidden=4), inputs(d=1))
    check_layer(make(kind, "random", direction, d=9, hidden=5, depth=3), inputs(d=9))


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_only_the_slow_direction_takes_sequential_steps(direction, monkeypatch):
    """MAF: density in one parallel pass, sampling in D steps; IAF the reverse."""
    layer = make("spline", "random", direction)
    x = inputs()
    calls = []
    real = ar_mod.made_sequential
    monkeypatch.setattr(ar_mod, "made_sequential", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        z, _ = layer(x)
        fwd_calls = len(calls)
        layer.inverse(z)
        layer.inverse_with_log_det(z)
    assert (fwd_calls, len(calls)) == ((0, 2) if direction == "forward" else (1, 1))


def _knot_inputs(layer, x: torch.Tensor) -> torch.Tensor:
    """x with every entry moved onto a bin edge of its own spline (row b uses knot b mod (K+1)),
    chosen in the order so that each entry's knots come from the entries already placed."""
    x = x.clone()
    with torch.no_grad():
        for e, _ in layer.made.plan:
            u = made_parallel(x, layer.made.weights())[:, e]
            knots = spline_params(u, BINS)[0] * (2 * BOUND) - BOUND  # x-knots (B, K+1)
            pick = torch.arange(x.shape[0]) % (BINS + 1)
            x[:, e] = knots.gather(1, pick[:, None]).squeeze(1)
    return x


@pytest.mark.parametrize("order", ["natural", "random"])
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_spline_at_the_bound_far_outside_and_at_bin_edges(order, direction):
    layer = make("spline", order, direction)
    x = inputs(n=8)
    x[0] = torch.tensor([BOUND, -BOUND, BOUND, -BOUND, BOUND], dtype=F64)
    x[1] = torch.tensor([1e4, -1e4, 1e4, -1e4, 1e4], dtype=F64)
    # mixed: the entries late in the order far outside (an entry at ±1e4 read by the conditioner of a
    # later entry inside the bound gives it extreme knots, whose inverse is ill-conditioned by
    # nature: the finiteness property test below covers that case)
    by_degree = torch.tensor([BOUND, -BOUND, 0.3, 1e4, -1e4], dtype=F64)
    x[2] = by_degree[torch.tensor(layer.made.in_deg) - 1]
    check_layer(layer, x)
    if direction == "forward":  # MAF: θ reads x, so x can be put on its own bin edges
        edges = _knot_inputs(layer, inputs(n=6, seed=1))
        check_layer(layer, edges)
    else:  # IAF: θ reads z; the spline maps x-knots to y-knots, so z on its y-knots = x on its x-knots
        z = inputs(n=6, seed=1)
        with torch.no_grad():
            for e, _ in layer.made.plan:
                u = made_parallel(z, layer.made.weights())[:, e]
                yk = spline_params(u, BINS)[1] * (2 * BOUND) - BOUND
                z[:, e] = yk.gather(1, (torch.arange(6) % (BINS + 1))[:, None]).squeeze(1)
            x_edges = layer.inverse(z)
        check_layer(layer, x_edges)


@settings(max_examples=16, deadline=None)
@given(
    direction=st.sampled_from(["forward", "inverse"]),
    order=st.sampled_from(["natural", "reverse", "random"]),
    magnitude=st.sampled_from([1e2, 1e4, 1e8]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_spline_with_extreme_parameters_stays_finite_both_ways(direction, order, magnitude, dtype, seed):
    """Random knots: every parameter ±magnitude·N(0, 1); inputs on [−1e4, 1e4] (exact ends included)."""
    layer = Autoregressive(6, "spline", 8, 2, order, seed % 97, direction, BINS, BOUND).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_((torch.randn(p.shape, generator=gen, dtype=F64) * magnitude).to(dtype))
        v = (torch.rand(16, 6, generator=gen, dtype=F64) * 2 - 1) * 1e4
        v[:8] = v[:8] / 1e4 * 2.5  # half near the bound
        v[0], v[1] = 1e4, -1e4
        v = v.to(dtype)
        for module in (layer, layer.frozen()):
            z, ld = module(v)
            x, ldi = module.inverse_with_log_det(v)
            for t in (z, ld, x, ldi, module.inverse(v)):
                assert torch.isfinite(t).all()


@settings(max_examples=8, deadline=None)
@given(direction=st.sampled_from(["forward", "inverse"]), seed=st.integers(0, 2**31 - 1))
def test_affine_with_large_parameters_stays_finite_both_ways(direction, seed):
    """The soft-clipped log-scale keeps |z| ≤ 1e3·|x| + |shift|: finite in float64 for parameters
    ~ 1e3·N(0, 1) and inputs on [−1e4, 1e4] (the shift itself is unbounded, as in coupling)."""
    layer = Autoregressive(6, "affine", 8, 2, "random", seed % 97, direction).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64) * 1e3)
        v = (torch.rand(16, 6, generator=gen, dtype=F64) * 2 - 1) * 1e4
        z, ld = layer(v)
        x, ldi = layer.inverse_with_log_det(v)
    assert all(torch.isfinite(t).all() for t in (z, ld, x, ldi))


def test_affine_map_is_x_times_soft_clipped_scale_plus_shift():
    """g against its closed form at chosen θ = (t, r): z = x·exp(r/(1 + |r|/ln 1000)) + t (zuko's
    MAF soft clip, slope 1 at 0, s → 1e3 as r → ∞), log g' = log s, and the inverse (z − t)/s."""
    g = ar_mod.ElementMap("affine", 8, 3.0, ar_mod.soft_log_scale)
    r = torch.tensor([-1e6, -7.0, -0.5, 0.0, 0.5, 7.0, 1e6], dtype=F64)
    t = torch.linspace(-2.0, 2.0, 7, dtype=F64)
    x = torch.linspace(-3.0, 3.0, 7, dtype=F64)
    bound = np.log(1e3)
    logs = np.array([v / (1 + abs(v) / bound) for v in r.tolist()])
    z, ld = g.forward(x, torch.stack([t, r], -1))
    np.testing.assert_allclose(ld.numpy(), logs, rtol=1e-12)
    np.testing.assert_allclose(z.numpy(), x.numpy() * np.exp(logs) + t.numpy(), rtol=1e-12)
    assert abs(ld[-1].item() - bound) < 1e-4 and abs(ld[0].item() + bound) < 1e-4  # s ∈ (1e-3, 1e3)
    xb, ldi = g.inverse(z, torch.stack([t, r], -1))
    np.testing.assert_allclose(xb.numpy(), x.numpy(), atol=1e-9)
    np.testing.assert_allclose(ldi.numpy(), logs, rtol=1e-12)


def test_new_layers_start_random_near_the_identity():
    """Both kinds keep PyTorch's default initialisation in the MADE's output layer (zuko's MAF start;
    the zero start lost 0.03–0.3 nats/dim at 300 steps, BENCHMARKS.md): a new layer is not the
    identity, later entries depend on earlier ones, and the spline stays a bijection of [−B, B]."""
    x = inputs()
    torch.manual_seed(0)
    affine = Autoregressive(D, "affine", 12, 2, "natural").double()
    spline = Autoregressive(D, "spline", 12, 2, "natural", bins=BINS, bound=BOUND).double()
    for layer in (affine, spline):
        assert layer.made.out.weight.abs().sum() > 0 and layer.made.out.bias.abs().sum() > 0
    with torch.no_grad():
        z, _ = affine(x)
        assert (z - x)[:, 1:].abs().max() > 1e-3  # the later entries depend on the earlier ones
        xs = torch.tanh(x)
        zs, _ = spline(xs)
        assert (zs - xs).abs().max() > 1e-3
        assert zs.abs().max() <= BOUND  # inside the bound the spline maps [−B, B] onto itself
        torch.testing.assert_close(spline.inverse(zs), xs, rtol=0, atol=1e-10)


#: MAF affine (sequential inverse) and IAF spline (sequential forward) in one small flow
MIXED = (
    "flow t {\n  input vector(dim=3)\n  actnorm\n  autoregressive(hidden=12, order=reverse)\n"
    "  autoregressive(kind=spline, bins=4, bound=2.0, direction=inverse, order=random, seed=2, hidden=12)\n"
    "  prior gaussian\n}\n"
)


def test_fused_model_compiles_fullgraph_without_graph_breaks():
    model, x = compiled(MIXED)
    fused = model.fuse().float()
    x = x.float() * 4 - 2

    def every_direction(v):
        z, ld = fused(v)
        x1, ld1 = fused.steps[1].inverse_with_log_det(v)
        x2, ld2 = fused.steps[2].inverse_with_log_det(v)
        return fused.inverse(z), ld, x1, ld1, x2, ld2

    torch._dynamo.reset()
    with torch.no_grad():
        report = torch._dynamo.explain(every_direction)(x)
    assert report.graph_break_count == 0, [str(b.reason)[:200] for b in report.break_reasons]
    assert report.graph_count == 1


def test_onnx_forward_and_inverse_parity(tmp_path):
    import onnxruntime as ort

    model, _ = compiled(MIXED)
    res = flowdsl.export_onnx(model.float(), tmp_path, exporter="torchscript", check=True)
    assert max(res.parity[f"{k}_rel"] for k in ("z", "logdet", "log_prob", "inverse")) <= 1e-4
    fused = model.fuse().float()
    x = torch.rand(9, 3, generator=torch.Generator().manual_seed(3)) * 8 - 4
    x[0] = torch.tensor([1e4, -1e4, 2.0])
    with torch.no_grad():
        z, ld = fused(x)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    fs = ort.InferenceSession(str(tmp_path / "forward.onnx"), opts, providers=["CPUExecutionProvider"])
    is_ = ort.InferenceSession(str(tmp_path / "inverse.onnx"), opts, providers=["CPUExecutionProvider"])
    oz, old, _ = fs.run(None, {"x": x.numpy()})
    ox, olp = is_.run(None, {"z": z.numpy()})[:2]  # inverse.onnx: x and its log-density (one pass)
    with torch.no_grad():
        xi, lpi = fused.inverse_with_log_prob(z)
    assert np.abs(oz - z.numpy()).max() <= 1e-4 * max(1.0, float(z.abs().max()))
    assert np.abs(old - ld.numpy()).max() <= 1e-4 * max(1.0, float(ld.abs().max()))
    assert np.abs(ox - x.numpy()).max() <= 1e-4 * max(1.0, float(x.abs().max()))
    assert np.abs(olp - lpi.numpy()).max() <= 1e-4 * max(1.0, float(lpi.abs().max()))


def test_nonfinite_training_output_names_the_layer_and_line():
    model = flowdsl.compile(flowdsl.parse(MIXED))
    with torch.no_grad():
        model.steps[2].made.first.bias.fill_(float("nan"))
    where = model.find_nonfinite(torch.rand(3, 3))
    assert where is not None and "autoregressive" in where and "line 5" in where


CONTEXTS = {
    "label": ("context label(classes=3)", lambda g: torch.tensor([0, 1, 2, 1, 0, 2])),
    "vector": ("context vector(dim=2)", lambda g: torch.randn(6, 2, generator=g, dtype=F64)),
    "image": (
        "context image(channels=1, height=2, width=2)",
        lambda g: torch.randn(6, 1, 2, 2, generator=g, dtype=F64),
    ),
}


@pytest.mark.parametrize("context", sorted(CONTEXTS))
def test_conditional_layers_read_the_context_in_every_entry(context):
    """With a context, MADE reads its embedding in the first layer: the log-det still matches the
    Jacobian in x (the context held fixed), the fused form agrees, the parameter count includes
    the E·h context weights, and every entry (the first in the order too) moves with the context."""
    decl, draw = CONTEXTS[context]
    text = (
        f"flow t {{\n  input vector(dim=4)\n  {decl}\n  autoregressive(hidden=8, order=random, seed=1)\n"
        "  autoregressive(kind=spline, bins=4, bound=2.0, direction=inverse, hidden=8)\n  prior gaussian\n}\n"
    )
    model = flowdsl.compile(flowdsl.parse(text)).double().eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64) * 0.3)
    c = draw(gen)
    x = torch.tanh(torch.randn(6, 4, generator=gen, dtype=F64)) * 1.8
    with torch.no_grad():
        z, ld = model(x, context=c)
        assert float((model.inverse(z, context=c) - x).abs().max()) <= 1e-10
    for i in range(2):
        j = jacobian(lambda v: model(v.unsqueeze(0), context=c[i : i + 1])[0].squeeze(0), x[i])
        assert float((torch.linalg.slogdet(j)[1] - ld[i]).abs()) <= 1e-10 * max(1.0, float(ld[i].abs()))
    fused = model.fuse()
    with torch.no_grad():
        fz, fld = fused(x, context=c)
        assert float((fz - z).abs().max()) <= 1e-12 and float((fld - ld).abs().max()) <= 1e-12
        assert float((fused.inverse(z, context=c) - x).abs().max()) <= 1e-11
        moved = (model(x, context=c.roll(1, 0))[0] - z).abs()
    assert float(moved.amax(0).min()) > 1e-6, "an entry ignores the context"
    for nid, step in zip(model.graph.chain, model.steps):
        assert step.uses_context
        assert model.graph.node(nid).n_params == sum(p.numel() for p in step.parameters())


def test_conditional_onnx_forward_and_inverse_parity(tmp_path):
    """The context enters both ONNX graphs (a label input); onnxruntime agrees both ways."""
    text = MIXED.replace("input vector(dim=3)\n", "input vector(dim=3)\n  context label(classes=3)\n")
    model = flowdsl.compile(flowdsl.parse(text))
    randomize_parameters(model, scale=1.0)
    res = flowdsl.export_onnx(model, tmp_path, exporter="torchscript", check=True)
    assert res.parity["context"] == "label"
    assert max(v for k, v in res.parity.items() if k.endswith("_rel")) <= 1e-4


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_fused_label_context_is_a_per_class_table(direction):
    """With a label context the fused MADE's first-layer context part is a per-class table
    T[k] = W_c·e_k + b₁ (K × H); fused equals unfused ≤ 1e-12 in float64 with randomised
    parameters (forward, inverse, one-pass inverse, log_prob), the fusion report says so, and
    the model that was fused is left as it was."""
    text = (
        "flow t {\n  input vector(dim=4)\n  context label(classes=3)\n"
        f"  autoregressive(hidden=8, order=random, seed=2, direction={direction})\n"
        f"  autoregressive(kind=spline, bins=4, bound=2.0, hidden=6, depth=3, direction={direction})\n"
        "  prior gaussian(conditional=true)\n}\n"
    )
    model = flowdsl.compile(flowdsl.parse(text)).double().eval()
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64) * 0.4)
    c = torch.tensor([2, 0, 1, 1, 2, 0])
    x = torch.tanh(torch.randn(6, 4, generator=gen, dtype=F64)) * 1.8
    fused = model.fuse()
    folded = [m for m in fused.modules() if getattr(m, "folded", False)]
    assert len(folded) == 2 and all(m.wc is None and not m.b1.any() for m in folded)
    assert [tuple(m.label_table.shape) for m in folded] == [(3, 8), (3, 6)]
    assert not any("label_embedding" in m.__dict__ for m in model.modules())
    report = fused.fusion_report()
    assert "label context folded: first layer's context part W_c·e_k + b₁ -> a per-class table (3×8" in report
    with torch.no_grad():
        z, ld = model(x, context=c)
        fz, fld = fused(x, context=c)
        x1, lp1 = model.inverse_with_log_prob(z, context=c)
        fx1, flp1 = fused.inverse_with_log_prob(z, context=c)
        pairs = [
            (fz, z),
            (fld, ld),
            (fused.inverse(z, context=c), model.inverse(z, context=c)),
            (fx1, x1),
            (flp1, lp1),
            (fused.log_prob(x, context=c), model.log_prob(x, context=c)),
        ]
    for a, b in pairs:
        assert float((a - b).abs().max()) <= 1e-12
    # a vector context is not constant per class: kept as the first layer's extra inputs
    vec = flowdsl.compile(flowdsl.parse(text.replace("label(classes=3)", "vector(dim=2)"))).double().eval()
    vfused = vec.fuse()
    assert not any(getattr(m, "folded", False) for m in vfused.modules())
    assert "vector context embedding read by the first layer" in vfused.fusion_report()


def test_folded_label_table_traces_without_graph_breaks():
    """The folded form indexes its per-class table with the raw labels: one graph, no break."""
    text = (
        "flow t {\n  input vector(dim=3)\n  context label(classes=4)\n  autoregressive(hidden=6)\n"
        "  autoregressive(hidden=6, direction=inverse)\n  prior gaussian\n}\n"
    )
    fused = flowdsl.compile(flowdsl.parse(text)).fuse()
    assert sum(getattr(m, "folded", False) for m in fused.modules()) == 2
    x, c = torch.randn(5, 3), torch.tensor([0, 3, 1, 2, 0])

    def both_ways(v, labels):
        z, ld = fused(v, context=labels)
        return fused.inverse(z, context=labels), ld

    torch._dynamo.reset()
    with torch.no_grad():
        report = torch._dynamo.explain(both_ways)(x, c)
    assert report.graph_break_count == 0, [str(b.reason)[:200] for b in report.break_reasons]
    assert report.graph_count == 1
