"""inverse.onnx: z -> (x, log_prob) in one pass, log_prob = log p(x) of the x it returns.

The reference is independent of the exported graph: the unfused model's FORWARD log-density in
float64 at the x onnxruntime returned (log p_prior(z) + Σ log|det ∂z/∂x|), at two batch sizes.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

import flowdsl
from flowdsl.errors import ContextError
from flowdsl.runtime.export.graphs import InverseGraph, inverse_with_log_prob
from flowdsl.runtime.export.onnx import sample_onnx
from flowdsl.runtime.export.parity import ort_session

IMAGE = """
flow im {
    input image(channels=2, height=4, width=4)
    actnorm conv1x1 coupling(hidden=8) squeeze split conv1x1(param=qr)
    prior gaussian(learned=true)
}
"""

VECTOR = """
flow vec {
    input vector(dim=3)
    repeat 2 { actnorm coupling(kind=affine, net=mlp, hidden=8, depth=1) permute(kind=reverse) }
    prior laplace(scale=0.5, learned=true)
}
"""


def _model(text: str):
    model = flowdsl.compile(flowdsl.parse(text), seed=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():  # non-trivial weights, learned prior away from N(0, 1)
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def test_inverse_onnx_returns_x_and_its_log_prob(tmp_path):
    """A multi-scale image flow (split: the latent layout matters); vector flows and every prior
    kind are covered by test_onnx_sampling, whose log_prob now comes from inverse.onnx."""
    model = _model(IMAGE)
    res = flowdsl.export_onnx(model, tmp_path / "o", check=True)
    assert res.parity["inverse_log_prob_rel"] <= 1e-4 and res.parity["inverse_rel"] <= 1e-4
    g = onnx.load(res.inverse).graph
    assert [i.name for i in g.input] == ["z"] and [o.name for o in g.output] == ["x", "log_prob"]
    assert [i.name for i in onnx.load(res.forward).graph.input] == ["x"]  # unconditional: no context input
    with pytest.raises(ContextError, match="unconditional"):
        sample_onnx(tmp_path / "o", 2, context=np.zeros(2))
    sess = ort_session(res.inverse)
    m64 = copy.deepcopy(model).double()
    gen = torch.Generator().manual_seed(5)
    for b in (1, 9):  # the batch dimension is dynamic
        z = 0.8 * torch.randn((b, *model.input_shape), generator=gen)
        x, lp = sess.run(None, {"z": z.float().numpy()})
        assert x.shape == (b, *model.input_shape) and lp.shape == (b,)
        with torch.no_grad():
            ref_x = m64.inverse(z.double()).numpy()
            ref_lp = m64.log_prob(torch.from_numpy(x).double()).numpy()  # forward density at ORT's x
        np.testing.assert_allclose(x, ref_x, rtol=0, atol=1e-4 * max(1.0, np.abs(ref_x).max()))
        np.testing.assert_allclose(lp, ref_lp, rtol=0, atol=1e-4 * max(1.0, np.abs(ref_lp).max()))


def test_one_pass_inverse_log_prob_is_the_forward_density_in_float64():
    model = _model(IMAGE).double()
    z = torch.randn((6, *model.input_shape), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x, lp = inverse_with_log_prob(model, z)
        assert torch.allclose(x, model.inverse(z), rtol=0, atol=1e-12)
        assert torch.allclose(lp, model.log_prob(x), rtol=0, atol=1e-10)
        fx, flp = inverse_with_log_prob(model.fuse(), z)  # the fused form that is exported
        assert torch.allclose(fx, x, atol=1e-10) and torch.allclose(flp, lp, atol=1e-9)


def test_a_wrong_inverse_log_prob_fails_the_checked_export(monkeypatch, tmp_path):
    model = _model(VECTOR)
    real = InverseGraph.forward

    def off_by_one(self, z, context=None):
        x, lp = real(self, z, context)
        return x, lp + 1.0

    monkeypatch.setattr(InverseGraph, "forward", off_by_one)
    with pytest.raises(flowdsl.FlowDSLError, match=r"onnxruntime disagrees.*inverse_log_prob"):
        flowdsl.export_onnx(model, tmp_path / "o", check=True)
