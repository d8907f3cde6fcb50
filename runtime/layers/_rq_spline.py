"""Monotonic rational-quadratic spline with identity tails (Durkan et al. 2019, "Neural Spline Flows").

Shapes: x (...,) elementwise; the unnormalised parameters u (..., 3K−1) for K bins, split as
u = [u_w (K), u_h (K), u_d (K−1)]. Every function here is elementwise over the leading dims.

Parameters (on the unit interval; the map [−B, B] → [0, 1], ξ = (x + B)/(2B), scales both axes
alike, so it leaves the slopes and the log-det unchanged and keeps every quantity O(1) whatever B).
Each raw value first goes through the soft clip clip_c(u) = u/(1 + |u|/c) (slope 1 at 0, |·| < c),
with L = ln(1/m_d) = ln 1000:
    widths   w = m_w + (1 − K·m_w)·softmax(clip_{L/2}(u_w))   (m_w = min_bin_width = 1e-3, so w ≥ m_w)
    heights  h = m_h + (1 − K·m_h)·softmax(clip_{L/2}(u_h))   (m_h = min_bin_height = 1e-3)
    knots    x_k = Σ_{j<k} w_j, y_k = Σ_{j<k} h_j for k = 0…K, with x_0 = y_0 = 0, x_K = y_K = 1 exactly
    derivs   δ_k = exp(clip_L(u_d)) ∈ (m_d, 1/m_d) at the K−1 interior knots,  δ_0 = δ_K = 1
             (u = 0 gives δ = 1 and equal bins: the identity; the boundary derivatives equal 1 to
             match the identity tails, so the map is C¹.)
The soft clips are zuko's parametrisation (its ``MonotonicRQSTransform`` with slope 1e-3): the bin
logits stay within ±L/2, so no bin is more than e^L = 1000 times another before the minimum is
added. With a plain softmax and δ = m_d + softplus(u_d + c₀), flowdsl's NSF trailed zuko's by 0.03
nats/dim on breast_cancer (BENCHMARKS.md, the peers section).

Forward, for ξ in bin k (x_k ≤ ξ < x_{k+1}; the bin search is Σ_j [ξ ≥ x_j] over interior knots,
comparisons and a sum, since ONNX has no searchsorted), with s = h_k/w_k and θ = (ξ − x_k)/w_k ∈ [0, 1]:
    η = y_k + h_k·(s·θ² + δ_k·θ(1−θ)) / (s + (δ_{k+1} + δ_k − 2s)·θ(1−θ))
    log dη/dξ = 2 log s + log(δ_{k+1}θ² + 2sθ(1−θ) + δ_k(1−θ)²) − 2 log(s + (δ_{k+1} + δ_k − 2s)·θ(1−θ))

Inverse, for η in bin k by heights (y_k ≤ η < y_{k+1}): θ solves aθ² + bθ + c = 0 with
    a = h_k(s − δ_k) + (η − y_k)(δ_{k+1} + δ_k − 2s)
    b = h_k δ_k − (η − y_k)(δ_{k+1} + δ_k − 2s)
    c = −s(η − y_k)
taken in the numerically stable form θ = 2c / (−b − √(b² − 4ac)) (c ≤ 0 and the denominator < 0),
then ξ = x_k + θ·w_k. ``*_inverse_with_log_det`` also evaluates log dη/dξ at that θ (the forward
log-derivative at the returned x), so a sample is scored in the same pass.

Tails: x outside [−B, B] passes through with log-det 0. The spline is evaluated on the clamped
input and the result chosen with ``torch.where``, so nothing non-finite (values or gradients)
comes from the branch not taken. Since w, h ≥ 1e-3 and δ ∈ (1e-3, 1e3), s ∈ [1e-3, 1e3]: every
intermediate is bounded, so neither direction can overflow, however large u (±inf is clamped).
Conditioning: inside a bin g' can fall to ~s²/δ_max ≈ 1e-9 when u is extreme (a tiny slope between
steep knots); the round trip then loses |y|·ε/g' (≈ 2e-7 in float64 at |u| ~ 1e4), an inherent
property of the map, not of the formulas. For |u| ≲ 2 it stays ≤ 1e-10 (tests/runtime/layers/test_rq_spline.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "spline_coupling_forward",
    "spline_coupling_inverse",
    "spline_coupling_inverse_with_log_det",
    "spline_inverse_with_log_det",
    "rq_spline_inverse_with_log_det",
    "spline_forward",
    "spline_inverse",
    "spline_params",
    "rq_spline_forward",
    "rq_spline_inverse",
    "MIN_BIN",
    "MIN_DERIVATIVE",
    "RAW_LIMIT",
]

MIN_BIN = 1e-3
MIN_DERIVATIVE = 1e-3
RAW_LIMIT = 1e4  # the unnormalised parameters are clamped to ±RAW_LIMIT (turns ±inf into finite values)
_LOG_RANGE = -math.log(MIN_DERIVATIVE)  # L = ln 1000: δ ∈ (e^−L, e^L), bin logits within ±L/2


def _soft_clip(u: Tensor, c: float) -> Tensor:
    """u/(1 + |u|/c): slope 1 at 0, |result| < c, smooth (no saturating transcendental)."""
    return u / (1.0 + u.abs() / c)


def _softmax(u: Tensor) -> Tensor:
    """softmax over the last dim, spelled out: exp(u − max u) / Σ exp(u − max u). The same values as
    ``torch.softmax``, whose CPU kernel is several times slower on rows of a few entries (K bins:
    13 ms against 1.3 ms for 256 × 32 rows of 8 on one thread, forward alone); the max is detached,
    which leaves the gradient exact (softmax does not change when all its inputs shift alike)."""
    e = torch.exp(u - u.detach().amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def _knots(u: Tensor, k: int, min_bin: float) -> Tensor:
    """Knot positions (..., K+1) on [0, 1] from unnormalised bin sizes u (..., K)."""
    sizes = min_bin + (1.0 - k * min_bin) * _softmax(_soft_clip(u, _LOG_RANGE / 2))
    cum = torch.cumsum(sizes, dim=-1)[..., :-1]
    zero = torch.zeros_like(cum[..., :1])
    return torch.cat([zero, cum, zero + 1.0], dim=-1)


def spline_params(u: Tensor, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """(x-knots, y-knots, derivatives), each (..., K+1), from u (..., 3K−1); see the module docstring."""
    u = u.clamp(-RAW_LIMIT, RAW_LIMIT)
    uw, uh, ud = u[..., :bins], u[..., bins : 2 * bins], u[..., 2 * bins :]
    cw, ch = _knots(uw, bins, MIN_BIN), _knots(uh, bins, MIN_BIN)
    inner = torch.exp(_soft_clip(ud, _LOG_RANGE))
    one = torch.ones_like(inner[..., :1])
    return cw, ch, torch.cat([one, inner, one], dim=-1)


def _bin(v: Tensor, knots: Tensor) -> Tensor:
    """Index (..., 1) of the bin holding v (...,): the number of interior knots ≤ v."""
    return (v.unsqueeze(-1) >= knots[..., 1:-1]).sum(dim=-1, keepdim=True)


def _take(t: Tensor, idx: Tensor) -> Tensor:
    return torch.gather(t, -1, idx).squeeze(-1)


def _bin_values(cw: Tensor, ch: Tensor, d: Tensor, idx: Tensor):
    xk, yk = _take(cw, idx), _take(ch, idx)
    wk = _take(cw, idx + 1) - xk
    hk = _take(ch, idx + 1) - yk
    return xk, yk, wk, hk, _take(d, idx), _take(d, idx + 1)


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _log_slope(theta: Tensor, s: Tensor, dk: Tensor, dk1: Tensor) -> tuple[Tensor, Tensor]:
    """(denominator, log dη/dξ) at θ in a bin of slope s with knot derivatives δ_k, δ_{k+1}."""
    t1 = theta * (1.0 - theta)
    den = s + (dk1 + dk - 2.0 * s) * t1
    dnum = dk1 * theta * theta + 2.0 * s * t1 + dk * (1.0 - theta) * (1.0 - theta)
    return den, 2.0 * torch.log(s) + torch.log(dnum) - 2.0 * torch.log(den)


def rq_spline_forward(x: Tensor, u: Tensor, bins: int, bound: float) -> tuple[Tensor, Tensor]:
    """y = g(x) and log|g'(x)|, both shaped like x (...,), for u (..., 3K−1)."""
    dt = _compute_dtype(x)
    xc, u = x.to(dt), u.to(dt)
    inside = (xc >= -bound) & (xc <= bound)
    xi = (xc.clamp(-bound, bound) + bound) / (2.0 * bound)
    xi = xi.clamp(0.0, 1.0)
    cw, ch, d = spline_params(u, bins)
    xk, yk, wk, hk, dk, dk1 = _bin_values(cw, ch, d, _bin(xi, cw))
    s = hk / wk
    theta = ((xi - xk) / wk).clamp(0.0, 1.0)
    den, logd = _log_slope(theta, s, dk, dk1)
    eta = yk + hk * (s * theta * theta + dk * theta * (1.0 - theta)) / den
    y = torch.where(inside, eta * (2.0 * bound) - bound, xc)
    return y.to(x.dtype), torch.where(inside, logd, torch.zeros_like(logd))


def _rq_inverse(y: Tensor, u: Tensor, bins: int, bound: float, with_log_det: bool) -> tuple[Tensor, Tensor | None]:
    dt = _compute_dtype(y)
    yc, u = y.to(dt), u.to(dt)
    inside = (yc >= -bound) & (yc <= bound)
    eta = ((yc.clamp(-bound, bound) + bound) / (2.0 * bound)).clamp(0.0, 1.0)
    cw, ch, d = spline_params(u, bins)
    xk, yk, wk, hk, dk, dk1 = _bin_values(cw, ch, d, _bin(eta, ch))
    s = hk / wk
    r = (eta - yk).clamp(min=0.0)
    mix = dk1 + dk - 2.0 * s
    a = hk * (s - dk) + r * mix
    b = hk * dk - r * mix
    c = -s * r
    disc = (b * b - 4.0 * a * c).clamp(min=0.0)
    theta = (2.0 * c / (-b - torch.sqrt(disc))).clamp(0.0, 1.0)
    xi = xk + theta * wk
    x = torch.where(inside, xi * (2.0 * bound) - bound, yc)
    if not with_log_det:
        return x.to(y.dtype), None
    logd = _log_slope(theta, s, dk, dk1)[1]
    return x.to(y.dtype), torch.where(inside, logd, torch.zeros_like(logd))


def rq_spline_inverse(y: Tensor, u: Tensor, bins: int, bound: float) -> Tensor:
    """x = g⁻¹(y), shaped like y (...,), for u (..., 3K−1)."""
    return _rq_inverse(y, u, bins, bound, False)[0]


def rq_spline_inverse_with_log_det(y: Tensor, u: Tensor, bins: int, bound: float) -> tuple[Tensor, Tensor]:
    """(x = g⁻¹(y), log g'(x)) in one pass: the forward log-derivative at the θ the inverse solves for."""
    x, logd = _rq_inverse(y, u, bins, bound, True)
    return x, logd


def _spline_raw(h: Tensor, bins: int) -> Tensor:
    """(B, C·(3K−1), *S) conditioner output -> (B, C, *S, 3K−1) spline parameters."""
    return h.reshape(h.shape[0], -1, 3 * bins - 1, *h.shape[2:]).movedim(2, -1)


def spline_forward(x: Tensor, h: Tensor, bins: int, bound: float) -> tuple[Tensor, Tensor]:
    """Elementwise spline of x (B, C, *S) with parameters from h (B, C·(3K−1), *S): (y, log g'(x))."""
    return rq_spline_forward(x, _spline_raw(h, bins), bins, bound)


def spline_inverse(y: Tensor, h: Tensor, bins: int, bound: float) -> Tensor:
    """Inverse of ``spline_forward`` for the same h."""
    return rq_spline_inverse(y, _spline_raw(h, bins), bins, bound)


def spline_inverse_with_log_det(y: Tensor, h: Tensor, bins: int, bound: float) -> tuple[Tensor, Tensor]:
    """Inverse of ``spline_forward`` and log g'(x) at the returned x, in one pass."""
    return rq_spline_inverse_with_log_det(y, _spline_raw(h, bins), bins, bound)


def _spline_coupling(
    v: Tensor, cond, mask_kind: str, c1: int, mask: Tensor | None, bins: int, bound: float, acc: torch.dtype, step, rev
) -> tuple[Tensor, Tensor]:
    """One direction of a spline coupling, with the forward log-det: ``step`` is
    :func:`spline_forward` (masks in order) or :func:`spline_inverse_with_log_det` (``rev``:
    the checkerboard's two halves undone last first); both return (values, log g' elementwise)."""

    def total(ld: Tensor) -> Tensor:
        return ld.sum(dim=tuple(range(1, ld.dim())), dtype=acc)

    if mask_kind == "channel":
        v1, v2 = v[:, :c1], v[:, c1:]
        out2, ld = step(v2, cond(0, v1), bins, bound)
        return torch.cat([v1, out2], dim=1), total(ld)
    m = mask.to(v.dtype)
    halves = list(enumerate((m, 1.0 - m)))
    logdet = v.new_zeros(v.shape[0], dtype=acc)
    for i, keep in reversed(halves) if rev else halves:
        out, ld = step(v, cond(i, v * keep), bins, bound)
        v = keep * v + (1.0 - keep) * out
        logdet = logdet + total((1.0 - keep).to(ld.dtype) * ld)
    return v, logdet


def spline_coupling_forward(
    x: Tensor, cond, mask_kind: str, c1: int, mask: Tensor | None, bins: int, bound: float, acc: torch.dtype
) -> tuple[Tensor, Tensor]:
    """A spline coupling over a channel or checkerboard mask: (y, log|det|) with the log-det
    summed per example in ``acc``. ``cond(i, x_kept)`` gives the i-th conditioner's output h
    (B, C·(3K−1), *S) for the kept entries (channel: the first ``c1`` channels, one half;
    checkerboard: ``mask`` then ``1 − mask``, two halves). Shared by the layer and its frozen form."""
    return _spline_coupling(x, cond, mask_kind, c1, mask, bins, bound, acc, spline_forward, rev=False)


def spline_coupling_inverse(
    y: Tensor, cond, mask_kind: str, c1: int, mask: Tensor | None, bins: int, bound: float
) -> Tensor:
    """Inverse of :func:`spline_coupling_forward` for the same conditioners."""
    if mask_kind == "channel":
        y1, y2 = y[:, :c1], y[:, c1:]
        return torch.cat([y1, spline_inverse(y2, cond(0, y1), bins, bound)], dim=1)
    m = mask.to(y.dtype)
    x = y
    for i, keep in reversed(list(enumerate((m, 1.0 - m)))):
        x = keep * x + (1.0 - keep) * spline_inverse(x, cond(i, x * keep), bins, bound)
    return x


def spline_coupling_inverse_with_log_det(
    y: Tensor, cond, mask_kind: str, c1: int, mask: Tensor | None, bins: int, bound: float, acc: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`spline_coupling_forward` with its FORWARD log-det at the returned x, in
    one pass (each step's log g' comes with its inverse)."""
    step = spline_inverse_with_log_det
    return _spline_coupling(y, cond, mask_kind, c1, mask, bins, bound, acc, step, rev=True)
