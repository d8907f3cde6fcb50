"""``coupling(kind=spline)``: the rational-quadratic spline (``_rq_spline.py``) and its layer.

References: the autograd derivative of the forward (float64), the round trip, hypothesis-drawn
knots, inputs exactly at ±bound, at bin edges and far outside (±1e4), extreme parameters (no
NaN/inf either way), the fused form, torch.compile(fullgraph=True) and onnxruntime parity.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flowtest import check_invertible, compiled
from hypothesis import given, settings
from hypothesis import strategies as st

import flowdsl
from flowdsl.runtime.layers._rq_spline import rq_spline_forward, rq_spline_inverse, spline_params

F64 = torch.float64


def _grad_logdet(x: torch.Tensor, u: torch.Tensor, bins: int, bound: float):
    """(y, log-det, log of the autograd derivative dy/dx), elementwise."""
    x = x.clone().requires_grad_(True)
    y, ld = rq_spline_forward(x, u, bins, bound)
    (g,) = torch.autograd.grad(y.sum(), x)
    return y.detach(), ld.detach(), torch.log(g)


def _edges(u: torch.Tensor, bins: int, bound: float) -> torch.Tensor:
    """The x-coordinates of the knots (..., K+1) in [−bound, bound]."""
    cw, _, _ = spline_params(u, bins)
    return cw * (2 * bound) - bound


@settings(max_examples=60, deadline=None)
@given(
    bins=st.integers(2, 12),
    bound=st.floats(0.1, 10.0),
    scale=st.floats(0.0, 2.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_knots_round_trip_and_autograd_logdet(bins, bound, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    n = 64
    u = torch.randn(n, 3 * bins - 1, generator=gen, dtype=F64) * scale
    inside = (torch.rand(n, generator=gen, dtype=F64) * 2 - 1) * bound
    x = inside.clone()
    x[:4] = torch.tensor([-bound, bound, -1e4, 1e4], dtype=F64)
    edges = _edges(u, bins, bound)
    x[4:8] = edges[4:8, 1]  # exactly on knots
    x[8:12] = edges[8:12, bins - 1]
    x[12:16] = torch.tensor([bound * 1.0001, -bound * 1.0001, 3 * bound, -3 * bound], dtype=F64)
    y, ld, ref = _grad_logdet(x, u, bins, bound)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    assert (ld - ref).abs().max() <= 1e-10
    back = rq_spline_inverse(y, u, bins, bound)
    assert (back - x).abs().max() <= 1e-10 * max(1.0, bound)
    out = x.abs() > bound
    assert torch.equal(y[out], x[out]) and torch.equal(ld[out], torch.zeros_like(ld[out]))
    assert (y[~out].abs() <= bound).all()  # [−B, B] maps onto itself


def test_boundary_points_and_bin_edges_are_exact():
    bins, bound = 6, 3.0
    u = torch.randn(5, 3 * bins - 1, generator=torch.Generator().manual_seed(1), dtype=F64)
    edges = _edges(u, bins, bound)  # (5, K+1): every knot of every row
    x = edges.T.contiguous()  # (K+1, 5): row j holds knot j of each spline
    y, ld, ref = _grad_logdet(x, u.expand(bins + 1, 5, -1), bins, bound)
    assert torch.equal(y[0], torch.full_like(y[0], -bound)) and torch.equal(y[-1], torch.full_like(y[-1], bound))
    assert (ld - ref).abs().max() <= 1e-10
    assert torch.equal(ld[0], torch.zeros(5, dtype=F64)) and torch.equal(ld[-1], torch.zeros(5, dtype=F64))
    assert (rq_spline_inverse(y, u.expand(bins + 1, 5, -1), bins, bound) - x).abs().max() <= 1e-12


def test_the_map_is_monotonic_and_continuously_differentiable_at_the_bound():
    bins, bound = 8, 3.0
    u = torch.randn(1, 3 * bins - 1, generator=torch.Generator().manual_seed(2), dtype=F64) * 2
    x = torch.linspace(-4, 4, 4001, dtype=F64)
    y, ld = rq_spline_forward(x, u.expand(len(x), -1), bins, bound)
    assert (y.diff() > 0).all()
    for b in (-bound, bound):  # derivative 1 on both sides of ±B (boundary derivatives are 1)
        near = torch.tensor([b - 1e-9, b + 1e-9], dtype=F64)
        _, ld_b, _ = _grad_logdet(near, u.expand(2, -1), bins, bound)
        assert ld_b.abs().max() < 1e-6


def test_zero_parameters_are_the_identity():
    x = torch.linspace(-5, 5, 101, dtype=F64)
    y, ld = rq_spline_forward(x, torch.zeros(101, 23, dtype=F64), 8, 3.0)
    assert (y - x).abs().max() < 1e-12 and ld.abs().max() < 1e-12


@settings(max_examples=40, deadline=None)
@given(
    bins=st.integers(2, 16),
    magnitude=st.sampled_from([1e2, 1e4, 1e8, 1e30, math.inf]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_extreme_parameters_never_give_nan_or_inf(bins, magnitude, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    n = 256
    u = torch.randn(n, 3 * bins - 1, generator=gen, dtype=F64).sign() * magnitude
    u = u * (torch.rand(n, 3 * bins - 1, generator=gen, dtype=F64) < 0.5)  # some entries 0, others ±extreme
    u = torch.where(torch.isnan(u), torch.zeros_like(u), u).to(dtype)
    x = ((torch.rand(n, generator=gen, dtype=F64) * 2 - 1) * 1e4).to(dtype)
    x[: n // 2] = x[: n // 2] / 1e4 * 3.5  # half of them near the bound
    x[0], x[1], x[2], x[3] = -3.0, 3.0, -1e4, 1e4
    x = x.clone().requires_grad_(True)
    uu = u.clone().requires_grad_(True)
    y, ld = rq_spline_forward(x, uu, bins, 3.0)
    back = rq_spline_inverse(x, uu, bins, 3.0)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all() and torch.isfinite(back).all()
    gx, gu = torch.autograd.grad((y.sum() + ld.sum() + back.sum()), (x, uu))
    assert torch.isfinite(gx).all() and torch.isfinite(gu).all()


SPLINE_SPECS = [
    ("input vector(dim=5)", "coupling(kind=spline, hidden=16, bins=6, bound=2.0)"),
    ("input vector(dim=4)", "coupling(kind=spline, mask=checkerboard, hidden=16)"),
    ("input image(channels=2, height=4, width=4)", "coupling(kind=spline, hidden=8, bins=4)"),
    ("input image(channels=2, height=4, width=4)", "coupling(kind=spline, net=resnet, depth=1, hidden=8)"),
    ("input image(channels=1, height=4, width=4)", "coupling(kind=spline, mask=checkerboard, net=mlp, hidden=8)"),
]


def _spec(inp: str, layer: str) -> str:
    return f"flow t {{\n  {inp}\n  actnorm\n  {layer}\n  prior gaussian\n}}\n"


@pytest.mark.parametrize("inp, layer", SPLINE_SPECS)
def test_layer_with_tails_fused_equals_unfused(inp, layer):
    model, x = compiled(_spec(inp, layer))
    x = x * 6 - 3  # entries on both sides of the bound
    x.view(-1)[:4] = torch.tensor([1e4, -1e4, 2.0, -2.0], dtype=F64)
    check_invertible(model, x)
    fused = model.fuse()
    with torch.no_grad():
        z, ld = model(x)
        fz, fld = fused(x)
        # relative: the folded actnorm before the spline rounds differently on entries near 1e4
        assert ((fz - z).abs() / z.abs().clamp(min=1.0)).max() <= 1e-12
        assert ((fld - ld).abs() / ld.abs().clamp(min=1.0)).max() <= 1e-12
        assert ((fused.inverse(z) - model.inverse(z)).abs() / x.abs().clamp(min=1.0)).max() <= 1e-12


@pytest.mark.parametrize("mask", ["channel", "checkerboard"])
def test_layer_inputs_exactly_at_the_bound_and_far_outside(mask):
    """No actnorm in front: the spline sees ±bound, ±1e4 and bin-edge-free random values directly."""
    text = f"flow t {{\n  input vector(dim=6)\n  coupling(kind=spline, mask={mask}, hidden=8, bound=2.5)\n}}\n"
    model, x = compiled(text, batch=6)
    x = x * 4 - 1
    x[2] = torch.tensor([2.5, 0.3, 1e4, -2.5, -1e4, -0.7], dtype=F64)  # mixed in one row
    x[0] = torch.tensor([2.5, -2.5, 2.5, -2.5, 2.5, -2.5], dtype=F64)
    x[1] = torch.tensor([1e4, -1e4, 1e4, -1e4, 1e4, -1e4], dtype=F64)
    check_invertible(model, x, samples=6)


@pytest.mark.parametrize("which", [1, 2])
def test_compiles_fullgraph_without_graph_breaks(which):
    model, x = compiled(_spec(*SPLINE_SPECS[which]))
    fused = model.fuse().float()
    x = x.float() * 6 - 3
    torch._dynamo.reset()
    fwd = torch.compile(fused, backend="eager", fullgraph=True)
    inv = torch.compile(fused.inverse, backend="eager", fullgraph=True)
    with torch.no_grad():
        z, ld = fwd(x)
        ez, eld = fused(x)
        assert torch.allclose(z, ez, atol=1e-6) and torch.allclose(ld, eld, atol=1e-5)
        assert torch.allclose(inv(z), fused.inverse(z), atol=1e-5)


@pytest.mark.parametrize(
    "inp, layer, exporter",
    [(*SPLINE_SPECS[0], "torchscript"), (*SPLINE_SPECS[4], "torchscript"), (*SPLINE_SPECS[0], "dynamo")],
)
def test_onnx_forward_and_inverse_parity_including_tails(inp, layer, exporter, tmp_path):
    import onnxruntime as ort

    model, _ = compiled(_spec(inp, layer))
    res = flowdsl.export_onnx(model.float(), tmp_path, exporter=exporter, check=True)
    assert max(res.parity[f"{k}_rel"] for k in ("z", "logdet", "inverse")) <= 1e-4
    fused = model.fuse().float()
    x = (torch.rand(9, *model.input_shape, generator=torch.Generator().manual_seed(3)) * 10 - 5).float()
    x.view(-1)[:4] = torch.tensor([1e4, -1e4, 3.0, -3.0])
    with torch.no_grad():
        z, ld = fused(x)
        xb = fused.inverse(z)
    fs = ort.InferenceSession(str(tmp_path / "forward.onnx"), providers=["CPUExecutionProvider"])
    is_ = ort.InferenceSession(str(tmp_path / "inverse.onnx"), providers=["CPUExecutionProvider"])
    oz, old, _ = fs.run(None, {"x": x.numpy()})
    (ox,) = is_.run(["x"], {"z": z.numpy()})
    assert np.abs(oz - z.numpy()).max() <= 1e-4 * max(1.0, float(z.abs().max()))
    assert np.abs(old - ld.numpy()).max() <= 1e-4 * max(1.0, float(ld.abs().max()))
    assert np.abs(ox - xb.numpy()).max() <= 1e-4 * max(1.0, float(xb.abs().max()))


@settings(max_examples=12, deadline=None)
@given(
    which=st.sampled_from([0, 2, 4]),
    magnitude=st.sampled_from([1e3, 1e6, 1e8]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_layer_with_extreme_parameters_stays_finite_both_ways(which, magnitude, dtype, seed):
    """Every parameter of the spline coupling randomised to ±magnitude·N(0, 1); inputs in [−1e4, 1e4]."""
    text = "flow t {\n  " + SPLINE_SPECS[which][0] + "\n  " + SPLINE_SPECS[which][1] + "\n}\n"
    model = flowdsl.compile(flowdsl.parse(text)).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64).to(dtype) * magnitude)
        x = ((torch.rand(16, *model.input_shape, generator=gen, dtype=F64) * 2 - 1) * 1e4).to(dtype)
        x[:8] = x[:8] / 1e4 * 4  # half near the bound
        z, ld = model(x)
        back = model.inverse(x)
    assert torch.isfinite(z).all() and torch.isfinite(ld).all() and torch.isfinite(back).all()


def test_nonfinite_training_output_names_the_spline_layer():
    text = "flow t {\n  input vector(dim=4)\n  actnorm\n  coupling(kind=spline, hidden=8)\n  prior gaussian\n}\n"
    model = flowdsl.compile(flowdsl.parse(text))
    with torch.no_grad():
        model.steps[1].nets[0][0].bias.fill_(float("nan"))
    where = model.find_nonfinite(torch.rand(3, 4))
    assert where is not None and "coupling" in where and "line 4" in where
