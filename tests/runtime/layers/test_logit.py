"""``logit(alpha)``: the logit transform of data in [0, 1] (/work/shared/dsl.md, "Version 1 additions").

References: the closed form y = log p − log(1 − p), p = α + (1 − 2α)x; the float64 autograd
derivative (hypothesis over α ∈ [0, 0.5) and x ∈ (0, 1), including points next to 0 and 1); the
round trip; located rejections of α outside [0, 0.5); the fused form; torch.compile(fullgraph=True);
onnxruntime parity of both directions with both exporters.
"""

from __future__ import annotations

import decimal
import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import torch
from flowtest import check_invertible, randomize_parameters
from hypothesis import given, settings
from hypothesis import strategies as st

import flowdsl
from flowdsl.compiler.kinds import get_layer
from flowdsl.errors import CheckError, FlowDSLError
from flowdsl.runtime.layers.logit import Logit

F64 = torch.float64


def _closed_form(alpha: float, xs: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The contract's formulas with p and 1 − p exact (fractions), their logs to 50 digits: (y, log-det)."""
    a = Fraction(alpha)
    ys, lds = [], []
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        log_scale = (Decimal((1 - 2 * a).numerator) / Decimal((1 - 2 * a).denominator)).ln()
        for x in xs:
            p = a + (1 - 2 * a) * Fraction(x)
            log_p = (Decimal(p.numerator) / Decimal(p.denominator)).ln()
            log_q = (Decimal((1 - p).numerator) / Decimal((1 - p).denominator)).ln()
            ys.append(float(log_p - log_q))
            lds.append(float(log_scale - log_p - log_q))
    return torch.tensor(ys, dtype=F64), torch.tensor(lds, dtype=F64)


EDGE = [0.0, 1.0, 1e-300, 1e-16, 1e-9, 1 - 1e-16, 1 - 1e-9, 0.5]


@settings(max_examples=80, deadline=None)
@given(
    alpha=st.one_of(st.just(0.0), st.floats(0.0, 0.5, exclude_max=True), st.sampled_from([1e-12, 0.4999999])),
    inside=st.lists(st.floats(1e-300, 1.0, exclude_max=True), min_size=1, max_size=24),
    edges=st.booleans(),
)
def test_round_trip_and_logdet_against_the_autograd_derivative(alpha, inside, edges):
    values = inside + EDGE
    if alpha == 0.0:  # the end points are ∓inf there; keep them out (they are tested below)
        values = [v for v in values if 0.0 < v < 1.0]
    if not edges:
        values = values[: len(inside)]
    x = torch.tensor(values, dtype=F64).reshape(-1, 1).requires_grad_(True)
    layer = Logit((1,), alpha)
    y, ld = layer(x)
    (dydx,) = torch.autograd.grad(y.sum(), x)
    ref_y, ref_ld = _closed_form(alpha, values)
    assert torch.isfinite(y).all() and torch.isfinite(ld).all()
    assert ((y.detach().reshape(-1) - ref_y).abs() / ref_y.abs().clamp(min=1.0)).max() <= 1e-10
    assert ((ld.detach() - ref_ld).abs() / ref_ld.abs().clamp(min=1.0)).max() <= 1e-10
    ref = torch.log(dydx.reshape(-1))
    ok = torch.isfinite(ref)  # autograd's 1/q overflows only for a subnormal α at x = 1 (the closed form covers it)
    assert ok.all() or alpha < 1e-300
    assert ((ld.detach() - ref).abs() / ref.abs().clamp(min=1.0))[ok].max() <= 1e-10
    back = layer.inverse(y.detach())
    # p = α + (1 − 2α)x rounds away x's last bits times 1/(1 − 2α): that is the map's own conditioning,
    # so the bound is 1e-10 until 1 − 2α < 1e-5 (α = 0.4999999 gives 1.4e-10 in practice)
    assert (back - x.detach()).abs().max() <= max(1e-10, 1e-15 / (1 - 2 * alpha))


def test_end_points_alpha_zero_are_infinite_and_alpha_positive_finite():
    x = torch.tensor([[0.0, 1.0]], dtype=F64)
    y, ld = Logit((2,), 0.0)(x)
    assert y[0, 0] == -math.inf and y[0, 1] == math.inf and ld[0] == math.inf
    y, ld = Logit((2,), 0.05)(x)
    assert torch.allclose(y, torch.tensor([[math.log(0.05 / 0.95), math.log(0.95 / 0.05)]], dtype=F64), rtol=1e-15)
    assert torch.allclose(Logit((2,), 0.05).inverse(y), x, atol=1e-15)
    # log-det of the two end points: 2 log 0.9 − 2 (log 0.05 + log 0.95)
    assert abs(float(ld[0]) - (2 * math.log(0.9) - 2 * (math.log(0.05) + math.log(0.95)))) <= 1e-13


def _compiled(text: str, batch: int = 4, seed: int = 0):
    """flowtest.compiled, with the data-dependent init on data in [0, 1) (the logit's domain)."""
    model = flowdsl.compile(flowdsl.parse(text), seed=seed).double()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *model.input_shape, dtype=F64, generator=gen)
    model.train()
    with torch.no_grad():
        model(x)
    randomize_parameters(model, seed=seed)
    return model.eval(), x


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.3])
@pytest.mark.parametrize("inp", ["input vector(dim=5)", "input image(channels=2, height=3, width=4)"])
def test_in_a_flow_full_jacobian_and_fused_equals_unfused(alpha, inp):
    text = f"flow t {{\n  {inp}\n  logit(alpha={alpha})\n  actnorm\n  conv1x1\n  coupling(hidden=8)\n}}\n"
    model, x = _compiled(text, batch=5)
    x[0].view(-1)[:2] = torch.tensor([1e-12, 1 - 1e-12], dtype=F64)
    check_invertible(model, x, samples=3)
    fused = model.fuse()
    with torch.no_grad():
        z, ld = model(x)
        fz, fld = fused(x)
        assert (fz - z).abs().max() <= 1e-12 * max(1.0, float(z.abs().max()))
        assert (fld - ld).abs().max() <= 1e-12 * max(1.0, float(ld.abs().max()))
        assert (fused.inverse(z) - x).abs().max() <= 1e-12


def test_default_alpha_and_no_parameters():
    kind = get_layer("logit")
    args = kind.Args.model_validate({}, strict=False)
    assert args.alpha == 0.05 and kind.param_count(args, (3, 4, 4)) == 0
    assert kind.infer_shape(args, (3, 4, 4), None) == (3, 4, 4)
    model = flowdsl.compile(flowdsl.parse("flow t {\n  input vector(dim=3)\n  logit\n}\n"))
    assert model.steps[0].alpha == 0.05 and sum(p.numel() for p in model.parameters()) == 0


def _err(text: str) -> FlowDSLError:
    with pytest.raises(FlowDSLError) as info:
        flowdsl.compile(flowdsl.parse(text, filename="bad.flow"))
    e = info.value
    assert str(e).startswith(f"bad.flow:{e.line}:{e.column}: ") and "^" in str(e)
    return e


@pytest.mark.parametrize(
    "value, substring",
    [
        ("-0.1", "greater than or equal to 0"),
        ("0.5", "less than 0.5"),
        ("0.75", "less than 0.5"),
        ("1", "less than 0.5"),
        ('"x"', "valid number"),
    ],
)
def test_alpha_outside_the_range_is_rejected_at_its_location(value, substring):
    layer = f"logit(alpha={value})"
    e = _err(f"flow t {{\n  input vector(dim=4)\n  {layer}\n}}\n")
    assert isinstance(e, CheckError)
    assert (e.line, e.column) == (3, 2 + layer.index("=") + 2), str(e)
    assert substring in str(e) and "alpha" in str(e), str(e)


def test_typo_of_the_argument_is_rejected_with_the_nearest_name():
    e = _err("flow t {\n  input vector(dim=4)\n  logit(alpah=0.1)\n}\n")
    assert isinstance(e, CheckError) and (e.line, e.column) == (3, 9) and "alpha" in str(e), str(e)


SPEC = "flow t {\n  input image(channels=2, height=4, width=4)\n  logit(alpha=0.05)\n  actnorm\n  conv1x1\n}\n"


def test_compiles_fullgraph_without_graph_breaks():
    model, x = _compiled(SPEC)
    x = x.float()
    for m in (model.float(), model.fuse().float()):
        torch._dynamo.reset()
        fwd = torch.compile(m, backend="eager", fullgraph=True)
        inv = torch.compile(m.inverse, backend="eager", fullgraph=True)
        with torch.no_grad():
            z, ld = fwd(x)
            ez, eld = m(x)
            assert torch.allclose(z, ez, atol=1e-6) and torch.allclose(ld, eld, rtol=1e-6, atol=1e-4)
            assert torch.allclose(inv(z), m.inverse(z), atol=1e-6)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_onnx_forward_and_inverse_parity(exporter, tmp_path):
    import onnxruntime as ort

    model, _ = _compiled(SPEC)
    res = flowdsl.export_onnx(model.float(), tmp_path, exporter=exporter, check=True)
    assert max(res.parity[f"{k}_rel"] for k in ("z", "logdet", "inverse")) <= 1e-4
    fused = model.fuse().float()
    x = torch.rand(9, *model.input_shape, generator=torch.Generator().manual_seed(3))
    x.view(-1)[:4] = torch.tensor([0.0, 1.0, 1e-6, 1 - 1e-6])
    with torch.no_grad():
        z, ld = fused(x)
    fs = ort.InferenceSession(str(tmp_path / "forward.onnx"), providers=["CPUExecutionProvider"])
    is_ = ort.InferenceSession(str(tmp_path / "inverse.onnx"), providers=["CPUExecutionProvider"])
    oz, old, _ = fs.run(None, {"x": x.numpy()})
    (ox,) = is_.run(["x"], {"z": z.numpy()})
    assert np.abs(oz - z.numpy()).max() <= 1e-4 * max(1.0, float(z.abs().max()))
    assert np.abs(old - ld.numpy()).max() <= 1e-4 * max(1.0, float(ld.abs().max()))
    assert np.abs(ox - x.numpy()).max() <= 1e-4
