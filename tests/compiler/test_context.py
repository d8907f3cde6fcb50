"""The flow's context in the compiler (issue 16, /work/shared/dsl.md "Version 1 additions"):
``context`` statements, the generic resolution of ``context``/``conditional`` arguments, the graph's
record of where the context enters, parameter counts and the architecture fingerprint."""

from __future__ import annotations

import math
from typing import Optional

import pytest

import flowdsl
from flowdsl.compiler import CONTEXT_EMBED
from flowdsl.compiler.canonical import architecture_sha256, canonical_form
from flowdsl.compiler.context import (
    conditional_prior_param_count,
    conditioner_extra_inputs,
    encoder_param_count,
)
from flowdsl.compiler.kinds import get_layer
from flowdsl.compiler.kinds.coupling import net_param_count
from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer, unregister_layer
from flowdsl.schema import ContextSpec

IMG = "input image(channels=2, height=8, width=8, levels=17)"


def spec(body: str, context: str | None = "context label(classes=10)", inp: str = IMG, blocks: str = ""):
    lines = [inp] + ([context] if context else []) + [line for line in body.strip().splitlines()]
    return blocks + "flow t {\n" + "".join(f"    {line.strip()}\n" for line in lines) + "}\n"


def parse(text: str):
    return flowdsl.parse(text, filename="c.flow")


@pytest.mark.parametrize(
    "stmt, kind, shape, fields",
    [
        ("context label(classes=10)", "label", (), {"classes": 10}),
        ("context vector(dim=3)", "vector", (3,), {"dim": 3}),
        ("context image(channels=1, height=4, width=8)", "image", (1, 4, 8), {"channels": 1, "height": 4, "width": 8}),
    ],
)
def test_context_statement_gives_the_spec_and_graph_its_context(stmt, kind, shape, fields):
    s = parse(spec("coupling(hidden=8)", stmt))
    ctx = s.context
    assert isinstance(ctx, ContextSpec) and ctx.kind == kind and ctx.shape == shape
    for name, value in fields.items():
        assert getattr(ctx, name) == value
    assert ctx.span.line == 3 and ctx.span.column == 5
    assert set(ctx.arg_spans) == set(fields)
    assert s.graph.context is ctx


def test_unconditional_flow_has_no_context_and_every_coupling_resolves_to_false():
    s = parse(spec("coupling(hidden=8)\nrepeat 2 { coupling(hidden=8) }", context=None))
    assert s.context is None and s.graph.context is None
    couplings = [n for n in s.graph.layers() if n.kind == "coupling"]
    assert len(couplings) == 3 and all(n.args.context is False for n in couplings)
    assert s.graph.context_nodes == []


def test_context_argument_resolves_to_whether_the_file_declares_one():
    s = parse(spec("coupling(hidden=8)\nactnorm\ncoupling(hidden=8, context=false)\ncoupling(hidden=8, context=true)"))
    couplings = [n for n in s.graph.layers() if n.kind == "coupling"]
    assert [n.args.context for n in couplings] == [True, False, True]
    assert all(type(n.args.context) is bool for n in s.graph.layers() if hasattr(n.args, "context"))
    assert s.graph.context_nodes == [couplings[0].id, couplings[2].id]


def test_resolution_reaches_rg_bodies_and_blocks():
    body = """
        rg(kernel=4) {
            disentangler { coupling(hidden=4, mask=checkerboard) }
            decimator { coupling(hidden=4, mask=checkerboard, context=false) }
        }
        step()
    """
    blocks = "block step(c=true) { coupling(hidden=4, context=$c) }\n"
    s = parse(spec(body, inp="input image(channels=2, height=8, width=8, levels=17)", blocks=blocks))
    nodes = {n.id: n for n in s.graph.layers()}
    dis = [nid for nid in nodes if "disentangler" in nid]
    dec = [nid for nid in nodes if "decimator" in nid]
    assert len(dis) == 2 and len(dec) == 2  # two levels for L=8, K=4
    assert all(nodes[nid].args.context is True for nid in dis)
    assert all(nodes[nid].args.context is False for nid in dec)
    assert set(dis) < set(s.graph.context_nodes)
    assert not set(dec) & set(s.graph.context_nodes)
    assert s.graph.context_nodes[-1] == "step.coupling0" or s.graph.context_nodes[-1].endswith("coupling0")


def test_resolution_is_generic_over_the_field():
    """A kind that declares ``context: Optional[bool] = None`` is resolved with no change to the passes."""

    @register_layer
    class _Probe(LayerKind):
        name = "ctxprobe"

        class Args(ArgsModel):
            context: Optional[bool] = None

    try:
        s = parse(spec("ctxprobe\nctxprobe(context=false)"))
        assert [n.args.context for n in s.graph.layers()] == [True, False]
        assert s.graph.context_nodes == ["ctxprobe0"]
        s = parse(spec("ctxprobe", context=None))
        assert [n.args.context for n in s.graph.layers()] == [False]
    finally:
        unregister_layer("ctxprobe")


def test_prior_alone_may_use_the_context():
    s = parse(spec("coupling(hidden=8, context=false)\nprior gaussian(learned=true, conditional=true)"))
    assert s.graph.context_nodes == [] and s.graph.prior_conditional()
    s = parse(spec("prior laplace(conditional=true)", context="context vector(dim=2)"))
    assert s.prior.args.conditional is True


# -- parameter counts ------------------------------------------------------------------------


def test_embedding_width_is_one_documented_constant():
    import flowdsl.compiler.context as C

    assert CONTEXT_EMBED == C.CONTEXT_EMBED == 32
    assert str(CONTEXT_EMBED) in C.__doc__ or "CONTEXT_EMBED" in C.__doc__


@pytest.mark.parametrize(
    "inp, net, mask",
    [
        ("input image(channels=2, height=8, width=8, levels=17)", "conv", "channel"),
        ("input image(channels=2, height=8, width=8, levels=17)", "resnet", "checkerboard"),
        ("input image(channels=2, height=4, width=4, levels=17)", "mlp", "channel"),
        ("input vector(dim=6)", "mlp", "channel"),
        ("input vector(dim=6)", "mlp", "checkerboard"),
    ],
)
def test_a_conditioned_coupling_widens_its_conditioner_by_the_embedding(inp, net, mask):
    layer = f"coupling(hidden=8, net={net}, mask={mask}, depth=2"
    off = parse(spec(layer + ", context=false)\nprior gaussian(conditional=true)", inp=inp)).graph.node("coupling0")
    on = parse(spec(layer + ")", inp=inp)).graph.node("coupling0")
    assert off.args.context is False and on.args.context is True
    shape = on.in_shape
    c, rest = shape[0], math.prod(shape[1:]) if len(shape) > 1 else 1
    per = rest if net == "mlp" else 1
    # independently: the extra inputs are E for vectors, E channels for conv nets, E·h·w for an mlp on images
    extra = CONTEXT_EMBED * (rest if (net == "mlp" and len(shape) == 3) else 1)
    assert conditioner_extra_inputs(shape, net) == extra
    if mask == "channel":
        c1 = c // 2
        n_in, n_out, nets = c1 * per, (c - c1) * per * 2, 1
    else:
        n_in, n_out, nets = c * per, c * per * 2, 2
    assert off.n_params == nets * net_param_count(net, n_in, n_out, 8, 2)
    assert on.n_params == nets * net_param_count(net, n_in + extra, n_out, 8, 2)
    # a conv's first layer is 3×3: each extra input channel adds 9·hidden weights
    if net in ("conv", "resnet"):
        assert on.n_params - off.n_params == nets * 9 * 8 * CONTEXT_EMBED


@pytest.mark.parametrize(
    "stmt, encoder",
    [
        ("context label(classes=10)", 10 * 32),
        ("context vector(dim=3)", 3 * 32 + 32 + 32 * 32 + 32),
        ("context image(channels=1, height=4, width=4)", 9 * 1 * 32 + 32 + 32 * 32 + 32),
    ],
)
def test_model_params_count_the_encoder_and_the_conditional_prior(stmt, encoder):
    s = parse(spec("coupling(hidden=8)\nprior gaussian(learned=true, conditional=true)", stmt))
    g = s.graph
    numel = 2 * 8 * 8
    assert g.context_params() == encoder == encoder_param_count(s.context)
    if s.context.kind == "label":
        prior = 10 * 2 * numel
    else:
        prior = CONTEXT_EMBED * 2 * numel + 2 * numel
    assert g.prior_params() == prior == conditional_prior_param_count(s.context, numel)
    assert g.model_params() == g.total_params() + prior + encoder
    assert "in the context encoder" in g.format()


def test_unconditional_counts_are_unchanged():
    s = parse(spec("coupling(hidden=8)\nprior gaussian(learned=true)", context=None))
    g = s.graph
    assert g.context_params() == 0 and g.prior_params() == 2 * 2 * 8 * 8
    assert g.model_params() == g.total_params() + g.prior_params()
    assert "context" not in g.format()


# -- canonical form --------------------------------------------------------------------------

PLAIN = spec("actnorm\ncoupling(hidden=8)\nprior gaussian(learned=true)", context=None)

#: the fingerprint of PLAIN before contexts existed (canonical form flowdsl-architecture/1): an
#: unconditional spec keeps its identity, so its checkpoints stay loadable
PLAIN_SHA = "e46bbe540a1e8025889e3d7b3c2fc12fde6ae238e9ee86c648e9eed2bb2b1a19"


def test_unconditional_canonical_form_has_no_context_trace():
    form = canonical_form(parse(PLAIN))
    assert "context" not in form
    assert all("context" not in layer["args"] for layer in form["layers"])
    assert "conditional" not in form["prior"]["args"]


def test_unconditional_fingerprint_is_the_one_of_before():
    from flowdsl.compiler.canonical import canonical_text

    text = canonical_text(parse(PLAIN))
    assert "context" not in text and "conditional" not in text
    assert architecture_sha256(parse(PLAIN)) == PLAIN_SHA


def test_fingerprint_changes_with_the_context():
    hashes = {
        architecture_sha256(parse(spec("coupling(hidden=8)", c)))
        for c in (
            "context label(classes=10)",
            "context label(classes=11)",
            "context vector(dim=10)",
            "context image(channels=1, height=8, width=8)",
            "context image(channels=1, height=4, width=4)",
        )
    }
    hashes.add(architecture_sha256(parse(spec("coupling(hidden=8)", context=None))))
    assert len(hashes) == 6
    # which layers read the context is part of the architecture
    a = architecture_sha256(parse(spec("coupling(hidden=8)\ncoupling(hidden=8)")))
    b = architecture_sha256(parse(spec("coupling(hidden=8)\ncoupling(hidden=8, context=false)")))
    assert a != b
    # the written default and the resolved one are one architecture
    c = architecture_sha256(parse(spec("coupling(hidden=8, context=true)\ncoupling(hidden=8)")))
    assert a == c


def test_coupling_shows_its_resolved_context():
    g = parse(spec("coupling(hidden=8)\ncoupling(hidden=8, context=false)")).graph
    kind = get_layer("coupling")
    shown = [kind.shown_args(n.args, n.in_shape)["context"] for n in g.layers()]
    assert shown == [True, False]
    table = g.format()
    assert "context=true" in table and "context=false" in table
    assert "context label(classes=10), shape (); enters coupling0" in table
    plain = parse(spec("coupling(hidden=8)", context=None)).graph
    assert "context=" not in plain.format()
    # every display of a node's arguments (the graph drawing too) follows the file
    assert [n.args_text().endswith("context=true") for n in g.layers()] == [True, False]
    assert [n.args_text().endswith("context=false") for n in g.layers()] == [False, True]
    assert all("context" not in n.args_text() for n in plain.layers())


def test_a_context_encoder_above_the_parameter_limit_is_named(monkeypatch):
    from flowdsl.compiler.limits import LIMITS
    from flowdsl.errors import ResourceLimitError

    monkeypatch.setattr(LIMITS, "max_params", 100_000)
    text = spec("coupling(hidden=4)", context="context label(classes=5000)")
    with pytest.raises(ResourceLimitError) as info:
        parse(text)
    e = info.value
    assert "the context encoder is here with 160,000" in str(e)
    assert (e.line, e.column) == (3, 5)


def test_context_true_inside_an_rg_body_without_a_context_is_located():
    from flowdsl.errors import CheckError

    text = spec(
        "rg(kernel=4) {\n"
        "disentangler { coupling(hidden=4, mask=checkerboard, context=true) }\n"
        "decimator { actnorm }\n}",
        context=None,
    )
    with pytest.raises(CheckError) as info:
        parse(text)
    line = text.splitlines()[3]
    assert (info.value.line, info.value.column) == (4, line.index("true") + 1)
    assert "context=true, but the flow declares no context" in str(info.value)


def test_prior_check_sees_the_context():
    from flowdsl.compiler.registry import PriorKind, register_prior, unregister_prior

    seen = []

    @register_prior
    class _ProbePrior(PriorKind):
        name = "ctxprobeprior"

        class Args(ArgsModel):
            conditional: bool = False

        @classmethod
        def check(cls, args, shape, ctx):
            seen.append(ctx.context)

    try:
        s = parse(spec("coupling(hidden=4)\nprior ctxprobeprior(conditional=true)"))
        assert seen == [s.context] and s.graph.prior_conditional()
    finally:
        unregister_prior("ctxprobeprior")


def test_bundled_unconditional_specs_carry_no_context_in_their_fingerprint_or_table():
    from pathlib import Path

    from flowdsl.compiler.canonical import canonical_text

    specs = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.flow"))
    plain = [s for s in (flowdsl.load(p) for p in specs) if s.context is None]
    assert len(plain) >= 5
    for s in plain:
        text = canonical_text(s)
        assert "context" not in text and "conditional" not in text, s.name
        assert "context" not in s.graph.format(), s.name
