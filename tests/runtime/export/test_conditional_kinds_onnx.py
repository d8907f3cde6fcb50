"""ONNX parity of every layer kind with a context (issue #16 acceptance): for each registered
kind (its default call, from the registry via ``kindspecs``), a tiny conditional flow is exported
and run in onnxruntime at two batch sizes (batch-dynamic ``x``/``z`` and ``context``), with every
context kind (label, vector, and image where the input is an image); the reference is the
unfused PyTorch model in float64 (tests/runtime/test_conditional_kinds.py covers the other
enumeration values of each kind in PyTorch)."""

from __future__ import annotations

import copy

import kindspecs
import numpy as np
import onnxruntime as ort
import pytest
import torch

import flowdsl
from flowdsl.runtime.training.demo import randomize_parameters

CONTEXTS = {
    "label": "context label(classes=3)",
    "vector": "context vector(dim=2)",
    "image": "context image(channels=1, height=2, width=2)",
}
PRIOR = "prior gaussian(learned=true, conditional=true)"


def _cases():
    out, seen = [], set()
    for case in kindspecs.layer_cases():
        if case.kind in seen:
            continue
        seen.add(case.kind)
        out += [(case, k) for k in (["label", "vector", "image"] if case.is_image else ["label", "vector"])]
    return out


CASES = _cases()


def _context(kind: str, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "label":
        return torch.randint(0, 3, (n,), generator=gen)
    if kind == "vector":
        return torch.randn(n, 2, dtype=torch.float64, generator=gen)
    return torch.rand(n, 1, 2, 2, dtype=torch.float64, generator=gen)


def _feed(t: torch.Tensor) -> np.ndarray:
    return t.numpy() if t.dtype == torch.long else t.float().numpy()


def test_every_kind_is_exported_with_a_context():
    from flowdsl.compiler.kinds import layer_kinds

    assert {case.kind for case, _ in CASES} == set(layer_kinds())


@pytest.mark.parametrize("case,ctx_kind", CASES, ids=[f"{c.id}-{k}" for c, k in CASES])
def test_conditional_kind_onnx_parity(case, ctx_kind, tmp_path):
    text = kindspecs.spec_text(case, context=CONTEXTS[ctx_kind], prior=PRIOR)
    model = flowdsl.compile(flowdsl.parse(text), seed=0).double()
    gen = torch.Generator().manual_seed(0)
    x_init = torch.rand(8, *model.input_shape, dtype=torch.float64, generator=gen) * 0.8 + 0.1
    model.train()
    with torch.no_grad():
        model(x_init, context=_context(ctx_kind, 8, 1))  # data-dependent initialisation
    randomize_parameters(model, seed=2)
    model.eval()
    fwd, inv = flowdsl.export_onnx(copy.deepcopy(model).float(), tmp_path / "onnx")
    s_f = ort.InferenceSession(str(fwd), providers=["CPUExecutionProvider"])
    s_i = ort.InferenceSession(str(inv), providers=["CPUExecutionProvider"])
    assert [i.name for i in s_f.get_inputs()] == ["x", "context"]
    assert [i.name for i in s_i.get_inputs()] == ["z", "context"]
    for n in (2, 5):  # two batch sizes through the same files
        x = torch.rand(n, *model.input_shape, dtype=torch.float64, generator=gen) * 0.8 + 0.1
        c = _context(ctx_kind, n, seed=n)
        with torch.no_grad():
            z, _ = model(x, context=c)
            lp = model.log_prob(x, context=c)
            x_back, lp_back = model.inverse_with_log_prob(z, context=c)
        z_o, _, lp_o = s_f.run(["z", "logdet", "log_prob"], {"x": x.float().numpy(), "context": _feed(c)})
        x_o, lp_io = s_i.run(["x", "log_prob"], {"z": z.float().numpy(), "context": _feed(c)})
        scale = max(1.0, float(lp.abs().max()))
        assert np.abs(z_o - z.numpy()).max() / max(1.0, float(z.abs().max())) <= 1e-4
        assert np.abs(lp_o - lp.numpy()).max() / scale <= 1e-4
        assert np.abs(x_o - x_back.numpy()).max() / max(1.0, float(x.abs().max())) <= 1e-4
        assert np.abs(lp_io - lp_back.numpy()).max() / scale <= 1e-4
