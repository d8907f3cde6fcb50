"""torch.compile readiness of ``model.fuse()``: zero graph breaks, no recompiles, inductor numerics.

* every spec in specs/ but the 3×32×32 twins of a digits spec: ``torch._dynamo.explain`` over
  forward, inverse and the prior's log-density of the fused module finds ONE graph and zero breaks
  (a ``.item()`` or any other host synchronisation would break the graph). A ``*_cifar`` spec with a
  ``*_digits`` twin has the same layer kinds at a larger size (``glow_cifar`` stays, for the
  ``scale`` block); tracing it again costs 10–20 s and finds nothing new, and ``flowdsl bench``
  compiles every spec with ``fullgraph=True``, which fails on a graph break;
* ``dynamic=True``: batch sizes 2, 3, 5 and 17 run without a single recompilation, for every
  layer family (Glow with the conv net; RealNVP with ResNet nets on one channel; periodic and
  emerging convolutions, butterflies, RG-Flow, vectors). ``F.conv2d`` on the CPU would guard on
  ``batch >= 16`` (a backend heuristic); the frozen convolutions use the oneDNN op instead;
* one real inductor compile (a small flow) matches eager (``slow``: ``flowdsl bench`` compiles
  every spec with inductor and reports the agreement with the unfused model).
The heavy inductor compiles of the 3×32×32 flows (10–25 s per direction cold) are not repeated
here: ``flowdsl bench`` compiles them and reports their timings.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo

import flowdsl

SPECS = sorted(p for p in (Path(__file__).resolve().parents[2] / "specs").glob("*.flow"))
# specs whose flow has layers (FDRL specs without layers compile to the identity: nothing to trace)
LAYERED = [p for p in SPECS if flowdsl.load(p).layers]
#: the 3×32×32 specs whose layer kinds a digits twin already has (see the module docstring)
TWINS = {"rgflow_cifar", "emerging_glow_cifar", "butterfly_cifar", "periodic_cifar"}
TRACED = [p for p in LAYERED if p.stem not in TWINS]


def test_the_traced_specs_cover_every_layer_kind_of_every_spec():
    def kinds(path: Path) -> set[str]:
        return {n.kind for n in flowdsl.check_graph(flowdsl.load(path)).layers()}

    covered = set().union(*(kinds(p) for p in TRACED))
    assert set().union(*(kinds(p) for p in LAYERED)) <= covered
    assert {f"{t.removesuffix('_cifar')}_digits" for t in TWINS} <= {p.stem for p in TRACED}


def fused_model(path: Path):
    from flowdsl.runtime.training.demo import random_context

    spec = flowdsl.load(path)
    model = flowdsl.compile(spec)
    x = torch.rand(8, *model.input_shape)
    model.train()
    with torch.no_grad():
        model(x, context=random_context(model, 8, x.dtype))
    return model.eval().fuse(), x


@pytest.mark.parametrize("path", TRACED, ids=[p.stem for p in TRACED])
def test_fused_module_traces_without_graph_breaks(path):
    fused, x = fused_model(path)
    assert len(fused.steps)

    from flowdsl.runtime.training.demo import random_context

    def both(x, c):  # conditional specs: the context goes through the encoder, layers and prior
        z, logdet = fused(x, context=c)
        return fused.inverse(z, context=c), logdet, fused.log_prob(x, context=c)

    torch._dynamo.reset()
    with torch.no_grad():
        report = torch._dynamo.explain(both)(x[:3], random_context(fused, 3, x.dtype))
    reasons = [str(b.reason)[:200] for b in report.break_reasons]
    assert report.graph_break_count == 0, reasons
    assert report.graph_count == 1


@pytest.mark.parametrize(
    "name",
    [
        "glow_digits",
        "realnvp_checkerboard_digits",
        "periodic_digits",
        "emerging_glow_digits",
        "butterfly_digits",
        "rgflow_digits",
        "vector_multiscale",
    ],
)
def test_dynamic_batch_does_not_recompile(name):
    fused, x = fused_model(SPECS[0].parent / f"{name}.flow")
    torch._dynamo.reset()
    fwd = torch.compile(fused, backend="eager", dynamic=True, fullgraph=True)
    inv = torch.compile(fused.inverse, backend="eager", dynamic=True, fullgraph=True)
    with torch.no_grad():
        fwd(torch.rand(4, *fused.input_shape))
        inv(torch.randn(4, *fused.input_shape))
        with torch._dynamo.config.patch(error_on_recompile=True):
            for b in (2, 3, 5, 17):
                z, ld = fwd(torch.rand(b, *fused.input_shape))
                assert z.shape[0] == b and ld.shape == (b,)
                assert inv(z).shape[0] == b


TINY = """
flow tiny {
    input image(channels=2, height=4, width=4)
    repeat 2 { actnorm conv1x1 coupling(hidden=8) }
    squeeze
    coupling(hidden=8)
}
"""


@pytest.mark.slow  # inductor numerics of every spec: the agreement table of `flowdsl bench`
def test_inductor_matches_eager(tmp_path):
    path = tmp_path / "tiny.flow"
    path.write_text(TINY)
    fused, x = fused_model(path)
    torch._dynamo.reset()
    lp = torch.compile(fused.log_prob, fullgraph=True, dynamic=False)
    inv = torch.compile(fused.inverse, fullgraph=True, dynamic=False)
    with torch.no_grad():
        z, _ = fused(x)
        assert torch.allclose(lp(x), fused.log_prob(x), rtol=1e-5, atol=1e-4)
        assert torch.allclose(inv(z), fused.inverse(z), rtol=1e-5, atol=1e-5)
