"""Conditional couplings (every kind × mask × net, images and vectors) and conditional rg, at module
level, float64 with RANDOMISED parameters: round trip, log-det against the autograd Jacobian, the
one-pass inverse_with_log_det, the context actually moving the output, the fused (inference) form,
and the parameter count against the compiler's formula."""

from __future__ import annotations

import math

import pytest
import torch
from ctxtest import INFOS, context_value, info, randomize, slice_context
from flowtest import jacobian

from flowdsl.compiler.context import conditioner_extra_inputs
from flowdsl.compiler.kinds.coupling import net_param_count
from flowdsl.runtime.bijector import Chain
from flowdsl.runtime.context import ContextValue
from flowdsl.runtime.fusion.rules.coupling import InferenceCoupling
from flowdsl.runtime.layers._rg_lattice import patch_pixels
from flowdsl.runtime.layers.coupling import Coupling
from flowdsl.runtime.layers.rg import RGFlow

TOL = 1e-10

# (shape, net); every kind × mask runs on each, the context kind cycles so all three are covered
LAYOUTS = [((6,), "mlp"), ((4, 4, 4), "conv"), ((4, 4, 4), "resnet"), ((2, 4, 4), "mlp")]
CASES = [
    (shape, net, kind, mask, ctx)
    for i, (shape, net) in enumerate(LAYOUTS)
    for j, (kind, mask) in enumerate(
        [(k, m) for k in ("affine", "additive", "spline") for m in ("channel", "checkerboard")]
    )
    for ctx in [("label", "vector", "image")[(i + j) % 3]]
]


def _ids(case):
    shape, net, kind, mask, ctx = case
    return f"{'x'.join(map(str, shape))}-{net}-{kind}-{mask}-{ctx}"


def make(shape, net, kind, mask, inf, seed=0):
    m = Coupling(shape, kind, 8, net, 2, mask, bins=5, bound=2.5, context=inf).double()
    return randomize(m, seed)


def _net_calls(module, fn):
    """How many times the conditioner nets of ``module`` run during ``fn()`` (one pass: once each)."""
    calls = []
    nets = [n for m in module.modules() if hasattr(m, "nets") for n in m.nets]
    hooks = [n.register_forward_hook(lambda *a: calls.append(1)) for n in nets]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
    return len(calls), len(nets)


def _jac_logdet(m, x, cv, n=2):
    """slogdet of the autograd Jacobian of x -> y for the first ``n`` examples (context fixed)."""
    out = []
    shape = x.shape[1:]
    for i in range(n):
        ci = slice_context(cv, i)
        f = lambda v: m(v.reshape(1, *shape), ci)[0].reshape(-1)  # noqa: E731
        out.append(torch.linalg.slogdet(jacobian(f, x[i].reshape(-1)))[1])
    return torch.stack(out)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_conditional_coupling(case):
    shape, net, kind, mask, ctx = case
    inf = INFOS[ctx]
    m = make(shape, net, kind, mask, inf)
    assert m.uses_context
    gen = torch.Generator().manual_seed(1)
    x = 1.2 * torch.randn(3, *shape, generator=gen, dtype=torch.float64)
    cv, enc = context_value(inf, 3)
    assert cv.raw[0].ne(cv.raw[1]).any()  # the Jacobians below see two different contexts
    with torch.no_grad():
        y, ld = m(x, cv)
        xb = m.inverse(y, cv)
        x1, ld1 = m.inverse_with_log_det(y, cv)
    assert (xb - x).abs().max() <= TOL
    assert (x1 - x).abs().max() <= TOL and (ld1 - ld).abs().max() <= TOL
    if kind != "additive":
        assert (ld[:2] - _jac_logdet(m, x, cv)).abs().max() <= TOL
    else:
        assert ld.abs().max() == 0
    # the context moves the output (another context for the same x)
    other, _ = context_value(inf, 3, seed=7)
    other = ContextValue(other.raw, enc(other.raw).detach()) if inf.kind != "label" else other
    if inf.kind == "label":
        raw = (cv.raw + 1) % inf.classes
        other = ContextValue(raw, enc(raw).detach())
    with torch.no_grad():
        y2, _ = m(x, other)
    assert (y2 - y).abs().max() > 1e-3
    # the fused form equals the layer (label: the mlp's first Linear folded per class)
    m.__dict__["label_embedding"] = enc.net.weight.detach() if inf.kind == "label" else None
    fused = InferenceCoupling(m).double()
    assert fused.folded == (inf.kind == "label" and net == "mlp")
    with torch.no_grad():
        fy, fld = fused(x, cv)
        fx = fused.inverse(y, cv)
        fx1, fld1 = fused.inverse_with_log_det(y, cv)
    for a, b in ((fy, y), (fld, ld), (fx, x), (fx1, x), (fld1, ld)):
        assert (a - b).abs().max() <= 1e-12
    # one pass: every conditioner runs once (the two-pass fallback would run each twice)
    for mod in (m, fused):
        calls, nets = _net_calls(mod, lambda: mod.inverse_with_log_det(y, cv))
        assert calls == nets
    # parameters: the compiler's conditioner formula with the context's extra inputs
    c, rest = shape[0], math.prod(shape[1:])
    per = rest if net == "mlp" else 1
    mult = {"affine": 2, "additive": 1, "spline": 3 * 5 - 1}[kind]
    if mask == "channel":
        n_in, n_out, nets = (c // 2) * per, (c - c // 2) * per * mult, 1
    else:
        n_in, n_out, nets = c * per, c * per * mult, 2
    extra = conditioner_extra_inputs(shape, net)
    assert sum(p.numel() for p in m.parameters()) == nets * net_param_count(net, n_in + extra, n_out, 8, 2)


@pytest.mark.parametrize("ctx_shape", [(2, 2, 2), (2, 8, 8), (2, 2, 8)], ids=["upsampled", "pooled", "mixed-axes"])
def test_image_context_of_another_size(ctx_shape):
    inf = info("image", channels=ctx_shape[0], height=ctx_shape[1], width=ctx_shape[2])
    m = make((4, 4, 4), "conv", "affine", "checkerboard", inf)
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    cv, _ = context_value(inf, 2)
    with torch.no_grad():
        y, ld = m(x, cv)
        x1, ld1 = m.inverse_with_log_det(y, cv)
    assert (x1 - x).abs().max() <= TOL and (ld1 - ld).abs().max() <= TOL
    assert (ld - _jac_logdet(m, x, cv)).abs().max() <= TOL


def test_unconditional_coupling_has_no_context_path():
    m = Coupling((4,), "affine", 8, "mlp", 2, "channel")
    assert not m.uses_context and m.nets[0][0].in_features == 2


# -- rg --------------------------------------------------------------------------------------
def make_rg(inf, kind="affine", net="mlp", seed=0):
    C, L, K = 1, 8, 4
    labels = [f"level{h}.{p}" for h in range(2) for p in ("disentangler", "decimator")]
    bodies = {
        lab: Chain([Coupling((C, K, K), kind, 8, net, 1, "checkerboard", bins=4, bound=2.5, context=inf)])
        for lab in labels
    }
    return randomize(RGFlow((C, L, L), K, 2, bodies).double(), seed)


@pytest.mark.parametrize(
    "ctx,kind,net",
    [("label", "affine", "mlp"), ("vector", "spline", "mlp"), ("image", "affine", "conv"), ("image", "spline", "mlp")],
)
def test_conditional_rg(ctx, kind, net):
    inf = INFOS[ctx] if ctx != "image" else info("image", channels=1, height=4, width=4)
    m = make_rg(inf, kind, net)
    assert m.uses_context
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    cv, enc = context_value(inf, 2)
    with torch.no_grad():
        z, ld = m(x, cv)
        xb = m.inverse(z, cv)
        x1, ld1 = m.inverse_with_log_det(z, cv)
    assert (xb - x).abs().max() <= TOL
    assert (x1 - x).abs().max() <= TOL and (ld1 - ld).abs().max() <= TOL
    assert (ld - _jac_logdet(m, x, cv)).abs().max() <= TOL  # per example: patch contexts not mixed up
    calls, nets = _net_calls(m, lambda: m.inverse_with_log_det(z, cv))
    assert calls == nets  # one pass: each body's conditioners once
    other = context_value(inf, 2, seed=5)[0]
    if ctx == "label":
        raw = (cv.raw + 1) % inf.classes
        other = ContextValue(raw, enc(raw).detach())
    else:
        other = ContextValue(other.raw, enc(other.raw).detach())
    with torch.no_grad():
        assert (m(x, other)[0] - z).abs().max() > 1e-3
        frozen = m.frozen()
        assert frozen.uses_context
        fz, fld = frozen(x, cv)
    assert (fz - z).abs().max() <= 1e-12 and (fld - ld).abs().max() <= 1e-12


def test_rg_image_context_reaches_each_patch_at_its_pixels():
    """Per-patch image context = the (L, L) feature map at the patch's pixels (independent
    reference: ``patch_pixels`` of the lattice)."""
    L, K = 8, 4
    m = make_rg(info("image", channels=1, height=8, width=8))
    E = 5
    emb = torch.randn(2, E, L, L, dtype=torch.float64)
    cv = ContextValue(torch.zeros(2, 1, L, L, dtype=torch.float64), emb)
    for j, (h, shifted) in enumerate([(0, True), (0, False), (1, True), (1, False)]):
        got = m._patch_context(j, cv).embedding  # (B·P², E, K, K)
        pix = patch_pixels(L, K, h, shifted)  # (P², K, K)
        P2 = pix.shape[0]
        ref = emb.reshape(2, E, L * L)[:, :, pix.reshape(-1)].reshape(2, E, P2, K, K).permute(0, 2, 1, 3, 4)
        assert torch.equal(got, ref.reshape(-1, E, K, K))
        assert got.shape[0] == 2 * P2


def test_rg_cone_inverse_with_context_matches_inverse():
    m = make_rg(INFOS["vector"])
    cv, _ = context_value(INFOS["vector"], 2)
    z = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2, 3] = True
    cone = m.cone(mask)
    zt = z.reshape(2, 64)[:, cone.latents]
    with torch.no_grad():
        x = m.inverse(z, cv).reshape(2, 64)[:, cone.pixels]
        xw = m.cone_inverse(zt, cone, cv)
    assert (xw - x).abs().max() <= 1e-12
