"""Emerging convolution (Hoogeboom et al. 2019): two masked autoregressive k×k convolutions.

Not a kind module by itself: ``conv(kind=emerging)`` (``conv.py``) builds :class:`EmergingConv`.

Shapes: x (B, C, H, W) -> y (B, C, H, W); k odd, c = (k−1)/2, q = c+1.

Parametrisation (one-sided "quadrant" kernels, each q×q, zero "SAME" padding):
    conv 1 (bottom-right quadrant)  y1[o,i,j] = Σ_{a,b∈[0,c]} Σ_ch K1[o,ch,a,b] · x[ch, i+a, j+b]
        the centre tap K1[:,:,0,0] is lower-triangular in the channels (o reads ch ≤ o) with
        diagonal d1 = sign1·exp(log_d1);
    conv 2 (top-left quadrant)      y[o,i,j] = Σ_{a,b∈[0,c]} Σ_ch K2[o,ch,a,b] · y1[ch, i−c+a, j−c+b] + bias[o]
        (the first mask flipped on all four axes) the centre tap K2[:,:,c,c] is upper-triangular
        (o reads ch ≥ o) with diagonal d2 = sign2·exp(log_d2).
    Together they have a full k×k receptive field. Init: N(0, 0.02²) off the diagonals, d = 1.

    forward   y = K2 ⋆ (K1 ⋆ x) + bias
    log-det   log|det J| = H·W·Σ_o (log|d1_o| + log|d2_o|)  (the Jacobian of each conv is
              triangular in a suitable ordering of the C·H·W unknowns; never zero by construction)
    inverse   x1 = solve_TL(y − bias), x = solve_BR(x1), each solve exact (see below).

Inverse: a tiled wavefront, exact after the static dependency depth
(:mod:`flowdsl.runtime.layers._emerging_solver`, no loop over pixels): each AR conv restricted
to a tile of Th×Tw pixels is a triangular matrix D, its coupling to the neighbour tiles a
matrix B; with D⁻¹ (float64) and G = D⁻¹B the tiles are solved level by level,
X_ℓ = D⁻¹·Y_ℓ − G·X_bnd,ℓ. The levels and the default tile (a CPU cost model) come from
:mod:`flowdsl.runtime.layers._emerging_tiles`, with the table of sequential steps (30 at
3×32×32 with the default 4×4 tiles, 14 with ``tile=(8, 8)``, instead of 126 for a pixel
wavefront and 2048 for a pixel-by-pixel back-substitution); ``EmergingConv.steps()`` reports
them for a built layer.

Training form :class:`EmergingConv`: D⁻¹ and G recomputed from the weights per call (cached
while the weights do not change and autograd is off). Inference form
:class:`FrozenEmergingConv`: kernels, D⁻¹, G (float64-exact, cast) and the log-det as buffers;
exports to ONNX as the static unrolled schedule (Gather/MatMul/Concat/Sub).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowdsl.runtime.bijector import Bijector, batch_constant
from flowdsl.runtime.layers._emerging_solver import ARQuadrantSolver, _ar_conv, _emerging_inverse, _link, _Schedule
from flowdsl.runtime.layers._emerging_tiles import choose_tile, quadrant_offsets, tile_levels

__all__ = [
    "EmergingConv",
    # re-exported from the solver helpers (imported from here by tests and docs)
    "ARQuadrantSolver",
    "tile_levels",
    "choose_tile",
    "quadrant_offsets",
]


class EmergingConv(Bijector):
    """Training form: parameters ``w1``, ``w2`` (C, C, q, q), ``log_d1``, ``log_d2``, ``bias`` (C,).

    ``tile`` overrides the tile size of the inverse (default :func:`choose_tile`).
    """

    def __init__(self, shape: tuple[int, ...], kernel: int = 3, tile: tuple[int, int] | None = None) -> None:
        super().__init__()
        if len(shape) != 3 or kernel % 2 != 1:
            raise ValueError(f"emerging conv needs a (C, H, W) shape and an odd kernel, got {shape}, k={kernel}")
        C, H, W = shape
        self.shape = tuple(shape)
        self.kernel_size = kernel
        q = (kernel - 1) // 2 + 1
        self.q = q
        self.w1 = nn.Parameter(torch.randn(C, C, q, q) * 0.02)
        self.w2 = nn.Parameter(torch.randn(C, C, q, q) * 0.02)
        self.log_d1 = nn.Parameter(torch.zeros(C))
        self.log_d2 = nn.Parameter(torch.zeros(C))
        self.bias = nn.Parameter(torch.zeros(C))
        self.register_buffer("sign1", torch.ones(C))
        self.register_buffer("sign2", torch.ones(C))
        m1 = torch.ones(C, C, q, q)
        m1[:, :, 0, 0] = torch.tril(torch.ones(C, C), -1)
        m2 = torch.ones(C, C, q, q)
        m2[:, :, q - 1, q - 1] = torch.triu(torch.ones(C, C), 1)
        self.register_buffer("mask1", m1)
        self.register_buffer("mask2", m2)
        self.sched_br = _Schedule(ARQuadrantSolver(C, H, W, kernel, "br", tile))
        self.sched_tl = _Schedule(ARQuadrantSolver(C, H, W, kernel, "tl", tile))
        self.register_buffer("link", _link(self.sched_tl.solver, self.sched_br.solver), persistent=False)
        self._op_cache: tuple | None = None

    # kernels -------------------------------------------------------------------------
    def kernels(self, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """The two masked quadrant kernels (C, C, q, q), centre diagonals inserted."""
        q = self.q
        dt = dtype or self.w1.dtype
        k1 = self.w1.to(dt) * self.mask1.to(dt)
        k2 = self.w2.to(dt) * self.mask2.to(dt)
        d1 = torch.diag(self.sign1.to(dt) * torch.exp(self.log_d1.to(dt)))
        d2 = torch.diag(self.sign2.to(dt) * torch.exp(self.log_d2.to(dt)))
        k1 = k1 + F.pad(d1[:, :, None, None], (0, q - 1, 0, q - 1))
        k2 = k2 + F.pad(d2[:, :, None, None], (q - 1, 0, q - 1, 0))
        return k1, k2

    def log_abs_det(self) -> Tensor:
        return (self.log_d1.sum() + self.log_d2.sum()) * (self.shape[1] * self.shape[2])

    def steps(self) -> dict[str, object]:
        """Sequential steps of the inverse (levels of the two AR solves) and the tile used."""
        sb, st = self.sched_br.solver, self.sched_tl.solver
        return {
            "tile": (sb.th, sb.tw),
            "levels_per_conv": (sb.n_levels, st.n_levels),
            "steps": sb.n_levels + st.n_levels,
            "pixel_wavefront_steps": 2 * (self.shape[1] + self.shape[2] - 1) if self.q > 1 else 2,
        }

    # bijector ------------------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        k1, k2 = self.kernels(x.dtype)
        y = _ar_conv(_ar_conv(x, k1, "br"), k2, "tl") + self.bias.to(x.dtype).view(1, -1, 1, 1)
        return y, batch_constant(self.log_abs_det(), x)

    def _operators(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(D₁⁻¹, G₁, D₂⁻¹, G₂) in ``dtype``, from the current weights (float64 internally).

        Without autograd (sampling) they are cached until a parameter or buffer changes
        (tracked by the tensors' in-place version counters: no host synchronisation)."""
        tensors = (self.w1, self.w2, self.log_d1, self.log_d2, self.sign1, self.sign2, self.mask1, self.mask2)
        key = None
        if not torch.is_grad_enabled():
            key = (dtype, self.w1.device) + tuple((t._version, t.data_ptr()) for t in tensors)
            if self._op_cache is not None and self._op_cache[0] == key:
                return self._op_cache[1]
        k1, k2 = self.kernels(torch.float64)
        d1, g1 = self.sched_br.operators(k1)
        d2, g2 = self.sched_tl.operators(k2)
        ops = tuple(t.to(dtype) for t in (d1, g1, d2, g2))
        self._op_cache = (key, ops) if key is not None else None
        return ops

    def inverse(self, y: Tensor) -> Tensor:
        d1, g1, d2, g2 = self._operators(y.dtype)
        y = y - self.bias.to(y.dtype).view(1, -1, 1, 1)
        return _emerging_inverse(y, self.sched_tl, self.sched_br, self.link, d2, g2, d1, g1)

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """One pass: the tiled solve and the constant log-det H·W·Σ (log|d1| + log|d2|)."""
        return self.inverse(y), batch_constant(self.log_abs_det(), y)

    def _frozen(self) -> "FrozenEmergingConv":
        out = FrozenEmergingConv(self)
        return out


class FrozenEmergingConv(Bijector):
    """Inference form: kernels, tile operators (float64-exact, cast) and the log-det as buffers."""

    def __init__(self, src: EmergingConv) -> None:
        super().__init__()
        dtype = src.w1.dtype
        self.shape = src.shape
        self.sched_br = _Schedule(src.sched_br.solver)
        self.sched_tl = _Schedule(src.sched_tl.solver)
        self.register_buffer("link", src.link.clone(), persistent=False)
        with torch.no_grad():
            k1, k2 = src.kernels(torch.float64)
            d1, g1 = src.sched_br.operators(k1)
            d2, g2 = src.sched_tl.operators(k2)
            for name, t in (("k1", k1), ("k2", k2), ("dinv1", d1), ("g1", g1), ("dinv2", d2), ("g2", g2)):
                self.register_buffer(name, t.to(dtype))
            self.register_buffer("bias", src.bias.detach().to(dtype).view(1, -1, 1, 1))
            ld = (src.log_d1.double().sum() + src.log_d2.double().sum()) * (src.shape[1] * src.shape[2])
            self.register_buffer("logdet", ld.to(dtype))
            ok = all(bool(torch.isfinite(getattr(self, n)).all()) for n in ("dinv1", "g1", "dinv2", "g2"))
            if not ok:
                raise ValueError(
                    f"emerging conv {src.node_id or '?'} (line {src.source_line}): the centre diagonals are "
                    f"too small to invert in {dtype}"
                )

    def steps(self) -> int:
        return self.sched_br.solver.n_levels + self.sched_tl.solver.n_levels

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = _ar_conv(_ar_conv(x, self.k1, "br", frozen=True), self.k2, "tl", frozen=True) + self.bias
        return y, batch_constant(self.logdet, x)

    def inverse(self, y: Tensor) -> Tensor:
        return _emerging_inverse(
            y - self.bias, self.sched_tl, self.sched_br, self.link, self.dinv2, self.g2, self.dinv1, self.g1
        )

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.inverse(y), batch_constant(self.logdet, y)
