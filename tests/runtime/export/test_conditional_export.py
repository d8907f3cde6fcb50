"""ONNX export of conditional flows: forward.onnx (x, context), inverse.onnx (z, context) -> (x,
log_prob), prior.onnx of a conditional prior (noise, context, temperature), for label, vector and
image contexts.

The reference is the UNFUSED model in float64 (not the fused module that was exported), at two
batch sizes that were not used at export; every learned parameter (label table, embedding nets,
the zero-initialised conditional prior maps) is moved away from its initial value, and a second
context must change the outputs, so a graph that dropped the context would fail.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

import flowdsl
from flowdsl.errors import ContextError
from flowdsl.runtime.export.onnx import sample_onnx
from flowdsl.runtime.export.parity import ort_session

MLP = "coupling(kind=affine, net=mlp, hidden=8, depth=1) permute(kind=reverse)"
SPECS = {
    "label": """
flow cond_label {
    input image(channels=2, height=4, width=4)
    context label(classes=4)
    actnorm coupling(hidden=8) squeeze split conv1x1
    prior gaussian(learned=true, conditional=true)
}
""",
    "label_mlp": f"""
flow cond_label_mlp {{
    input vector(dim=3)
    context label(classes=4)
    repeat 2 {{ actnorm {MLP} }}
}}
""",
    "vector": f"""
flow cond_vector {{
    input vector(dim=3)
    context vector(dim=2)
    repeat 2 {{ actnorm {MLP} }}
    prior laplace(scale=0.5, learned=true, conditional=true)
}}
""",
    "image": """
flow cond_image {
    input image(channels=2, height=4, width=4)
    context image(channels=1, height=2, width=2)
    actnorm coupling(hidden=8) squeeze split conv1x1
}
""",
}
KINDS = list(SPECS)


def _ck(case: str) -> str:
    """The context kind of a case ("label_mlp": a label on a vector flow, MLP conditioners)."""
    return case.split("_")[0]


def _model(kind: str):
    model = flowdsl.compile(flowdsl.parse(SPECS[kind]), seed=0)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def _f64(model):
    return copy.deepcopy(model).double()  # .double() converts in place: keep the exported model as it is


def _context(kind: str, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    kind = _ck(kind)
    if kind == "label":
        return torch.randint(0, 4, (batch,), generator=g)
    if kind == "vector":
        return torch.randn((batch, 2), generator=g, dtype=torch.float64)
    return torch.rand((batch, 1, 2, 2), generator=g, dtype=torch.float64)


def _feed(c: torch.Tensor) -> np.ndarray:
    return c.numpy() if c.dtype == torch.int64 else c.float().numpy()


class _Exports(dict):
    """kind -> (model, folder, parity): each spec exported once (on first use), checked in onnxruntime."""

    def __init__(self, factory) -> None:
        super().__init__()
        self.factory = factory

    def __missing__(self, kind: str):
        model = _model(kind)
        folder = self.factory.mktemp(kind) / "onnx"
        res = flowdsl.export_onnx(model, folder, check=True, check_batch=5)
        self[kind] = (model, folder, res.parity)
        return self[kind]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> _Exports:
    return _Exports(tmp_path_factory)


def _io(path) -> tuple[list, list]:
    g = onnx.load(str(path)).graph
    return list(g.input), [o.name for o in g.output]


@pytest.mark.parametrize("kind", KINDS)
def test_signatures_take_the_context_with_the_batch_dimension_of_x(kind, exported):
    model, folder, parity = exported[kind]
    assert parity["context"] == _ck(kind) and all(parity[f"{k}_rel"] <= 1e-4 for k in ("z", "inverse_log_prob"))
    for name, first, outputs in (("forward", "x", ["z", "logdet", "log_prob"]), ("inverse", "z", ["x", "log_prob"])):
        inputs, outs = _io(folder / f"{name}.onnx")
        assert [i.name for i in inputs] == [first, "context"] and outs == outputs
        main, ctx = (i.type.tensor_type for i in inputs)
        assert ctx.elem_type == (onnx.TensorProto.INT64 if _ck(kind) == "label" else onnx.TensorProto.FLOAT)
        dims = [d.dim_value for d in ctx.shape.dim[1:]]
        assert dims == list(model.context_shape)
        assert ctx.shape.dim[0].dim_param and ctx.shape.dim[0].dim_param == main.shape.dim[0].dim_param
    prior_inputs = [i.name for i in _io(folder / "prior.onnx")[0]]
    want = {"label": ["normal", "context", "temperature"], "vector": ["uniform", "context", "temperature"]}
    assert prior_inputs == want.get(kind, ["normal", "temperature"])  # image, label_mlp: unconditional priors
    meta = {p.key: p.value for p in onnx.load(str(folder / "inverse.onnx")).metadata_props}
    assert meta["flowdsl.context"].startswith(_ck(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_onnxruntime_matches_the_float64_model_at_two_batch_sizes(kind, exported):
    model, folder, _ = exported[kind]
    m64 = _f64(model)
    fwd, inv = ort_session(str(folder / "forward.onnx")), ort_session(str(folder / "inverse.onnx"))
    gen = torch.Generator().manual_seed(11)
    for b in (1, 6):
        x = torch.rand((b, *model.input_shape), generator=gen, dtype=torch.float64)
        c = _context(kind, b, seed=b)
        z, ld, lp = fwd.run(None, {"x": x.float().numpy(), "context": _feed(c)})
        with torch.no_grad():
            rz, rld = m64(x, context=c)
            rlp = m64.log_prob(x, context=c)
        for got, ref in ((z, rz), (ld, rld), (lp, rlp)):
            np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-4 * max(1.0, float(ref.abs().max())))
        zz = 0.8 * torch.randn((b, *model.input_shape), generator=gen, dtype=torch.float64)
        xo, lpo = inv.run(None, {"z": zz.float().numpy(), "context": _feed(c)})
        with torch.no_grad():
            rx = m64.inverse(zz, context=c)
            rlpo = m64.log_prob(torch.from_numpy(xo).double(), context=c)  # forward density at ORT's x
        np.testing.assert_allclose(xo, rx.numpy(), rtol=0, atol=1e-4 * max(1.0, float(rx.abs().max())))
        np.testing.assert_allclose(lpo, rlpo.numpy(), rtol=0, atol=1e-4 * max(1.0, float(rlpo.abs().max())))
        other = _context(kind, b, seed=100 + b)
        if _ck(kind) == "label":
            other = (c + 1) % 4
        z2, _, _ = fwd.run(None, {"x": x.float().numpy(), "context": _feed(other)})
        assert np.abs(z2 - z).max() > 1e-3  # the context reaches the graph


@pytest.mark.parametrize("kind", ["label", "vector"])
def test_conditional_prior_onnx_samples_as_the_model(kind, exported):
    model, folder, _ = exported[kind]
    c = _context(kind, 8, seed=3)
    if kind == "label":
        c = torch.arange(8) % 4
    m64 = _f64(model)
    with torch.no_grad():  # temperature 0: the sample is the flow's image of the context's prior mode
        ref = m64.sample(8, temperature=0.0, context=c)
    x, lp = sample_onnx(folder, 8, temperature=0.0, with_log_prob=True, context=_feed(c))
    np.testing.assert_allclose(x, ref.numpy(), rtol=0, atol=1e-4 * max(1.0, float(ref.abs().max())))
    assert np.abs(x[1:4] - x[0]).max() > 1e-3  # different contexts, different prior modes
    with torch.no_grad():
        rlp = m64.log_prob(torch.from_numpy(x).double(), context=c)
    np.testing.assert_allclose(lp, rlp.numpy(), rtol=0, atol=1e-4 * max(1.0, float(rlp.abs().max())))
    one, _ = sample_onnx(folder, 3, seed=1, with_log_prob=True, context=_feed(c[2]))  # one example, repeated
    assert one.shape == (3, *model.input_shape) and np.isfinite(one).all()


def test_sampling_an_export_checks_the_context(exported, tmp_path):
    _, folder, _ = exported["label"]
    with pytest.raises(ContextError, match="conditional: pass a context"):
        sample_onnx(folder, 4)
    with pytest.raises(ContextError, match=r"outside 0\.\.3"):
        sample_onnx(folder, 2, context=np.array([0, 4]))
    with pytest.raises(ContextError, match="integers"):
        sample_onnx(folder, 2, context=np.array([0.0, 1.0]))
    import onnxruntime as ort

    for name, first in (("forward", "x"), ("inverse", "z")):  # in the graphs: ONNX Gather wraps -1 around
        sess = ort_session(str(folder / f"{name}.onnx"))
        for bad in (-1, 4):
            with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="Gather"):
                sess.run(None, {first: np.zeros((2, 2, 4, 4), np.float32), "context": np.array([0, bad], np.int64)})
    prior = ort_session(str(folder / "prior.onnx"))
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="Gather"):
        feeds = {"normal": np.zeros((1, 2, 4, 4), np.float32), "temperature": np.ones(1, np.float32)}
        prior.run(None, {**feeds, "context": np.array([-1], np.int64)})
    _, vfolder, _ = exported["vector"]
    with pytest.raises(ContextError, match=r"shape \(2, 3\), expected \(2, 2\)"):
        sample_onnx(vfolder, 2, context=np.zeros((2, 3)))


def test_the_export_command_prints_the_context_input(tmp_path, capsys):
    from flowdsl.cli import main

    (tmp_path / "c.flow").write_text(SPECS["label"], encoding="utf-8")
    assert main(["export", str(tmp_path / "c.flow"), "--untrained", "--out", str(tmp_path / "o"), "--batch", "9"]) == 0
    text = capsys.readouterr().out
    assert "forward.onnx: x (B,2,4,4), context (B,) int64 -> z, logdet, log_prob" in text
    assert "inverse.onnx: z (B,2,4,4), context (B,) int64 -> x, log_prob" in text
    assert "prior.onnx: normal (B,2,4,4), context (B,) int64, temperature (1,) -> z" in text
    assert "batch 9, label contexts" in text and "inverse_log_prob" in text
