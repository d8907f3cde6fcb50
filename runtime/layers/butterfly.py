"""``butterfly(depth=auto|int, over=all|channels|width|height)``: invertible butterfly layer (ButterflyFlow).

Shapes: x (B, C, H, W) or (B, D) -> same shape. The layer mixes a vector of length n:
    over=all       the flattened C·H·W entries in CHW order (vectors: the D entries); n = C·H·W;
    over=channels  the C channels of every pixel, the same butterfly at every pixel; n = C
                   (on vectors: the D entries);
    over=width     the W entries of every row, the same butterfly for every (channel, row); n = W;
    over=height    the H entries of every column, the same butterfly for every (channel, column); n = H.
(width/height need an image and are rejected on vectors.) Let r = (total entries)/n be the number
of vectors the butterfly is applied to (1 for ``all``).

Levels ℓ = 0 … depth−1 are applied in this order. Level ℓ cuts the vector into 2^ℓ blocks of
l = n/2^ℓ entries and, for every block b and j < l/2, mixes the pair i0 = b·l + j, i1 = i0 + l/2
with its own free 2×2 matrix [[A, B], [C, D]]:

    forward   [y_i0; y_i1] = [[A, B], [C, D]] · [x_i0; x_i1]
    inverse   [x_i0; x_i1] = [[D, −B], [−C, A]] · [y_i0; y_i1] / (A·D − B·C)     (closed form, O(n))
    log-det   log|det J| = r · Σ_{levels, pairs} log|A·D − B·C|      (input-independent)

2^depth must divide n (level ℓ needs 2^(ℓ+1) | n); ``depth=auto`` is the largest such depth. With
depth = log2 n the product is a full butterfly matrix (an FFT-like factorisation).

Parametrisation (4 free parameters per pair, every matrix of positive determinant reachable):
``weight`` of shape (depth, 4, n/2) with rows θ, α, β, δ and

    [[A, B], [C, D]] = [[cos θ, −sin θ], [sin θ, cos θ]] · [[e^α, β], [0, e^δ]]

(the QR decomposition of the 2×2 matrix), so A·D − B·C = e^(α+δ) is never zero and
log|A·D − B·C| = α + δ exactly. Created in ``__init__`` (a state dict loads before any
forward). Init: a random rotation per pair, θ ~ N(0, 0.3²), α = β = δ = 0 (near the identity,
AD − BC = 1). Compared with storing A, B, C, D directly (the reference code) this cannot become
singular in training, and random perturbations of the parameters stay well conditioned (a
perturbed free 2×2 has a condition number of up to ~10, a depth-10 product ~50; that made the
float32 inverse of a 6-layer 3×32×32 ButterflyFlow lose 3 digits). :meth:`Butterfly.check`
(called by ``frozen()``) still raises an error naming the node and the source line if e^(α+δ)
under- or overflows; forward/inverse never synchronise with the host.

Evaluation: for n ≤ ``DENSE_MAX`` (= 128; channels, width, height and small images) the levels
are first multiplied into one dense n×n matrix M (the identity pushed through them, still
differentiable in the training form) and applied as one GEMM along the mixed axis; above that,
level by level (O(n) per level). Inference form (``frozen()``): M and M⁻¹ (the identity pushed
through the closed-form inverse levels, no solver), or the per-level pair matrices and their
closed-form inverses, computed in float64 and stored in the module's dtype, and the constant
log-det. ``Butterfly.matrix()`` returns M in float64 (e.g. to fuse over=channels, a C×C 1×1
convolution, with neighbouring channel-linear layers).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowdsl.compiler.kinds.butterfly import ButterflyKind, max_depth, mixed_size
from flowdsl.runtime.bijector import Bijector, batch_constant
from flowdsl.runtime.layers.lowering import lowering
from flowdsl.wording import plural

__all__ = ["Butterfly", "FrozenButterfly", "max_depth", "DENSE_MAX"]

#: frozen layers mixing at most this many entries use one dense n×n matrix
DENSE_MAX = 128


class _Layout:
    """How x (B, *shape) is viewed as (P, n, Q) with the mixed axis in the middle."""

    def __init__(self, shape: tuple[int, ...], over: str) -> None:
        self.shape = tuple(shape)
        self.n = mixed_size(self.shape, over)
        if over == "all":
            self.post = 1
        elif over == "channels":
            self.post = math.prod(self.shape[1:])
        elif over == "height":
            self.post = self.shape[2]
        else:
            self.post = 1
        self.reps = math.prod(self.shape) // self.n

    def to3(self, x: Tensor) -> Tensor:
        return x.reshape(-1, self.n, self.post)

    def back(self, x: Tensor) -> Tensor:
        return x.reshape(-1, *self.shape)


def _apply_level(x: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor, level: int) -> Tensor:
    """One level on x (P, n, Q); a…d of shape (n/2,) ordered (block, j)."""
    n, post = x.shape[1], x.shape[2]
    nb = 2**level
    half = n // (2 * nb)
    v = x.reshape(-1, nb, 2, half, post)
    x0, x1 = v[:, :, 0], v[:, :, 1]
    shp = (nb, half, 1)
    a, b, c, d = a.reshape(shp), b.reshape(shp), c.reshape(shp), d.reshape(shp)
    y = torch.stack([a * x0 + b * x1, c * x0 + d * x1], 2)
    return y.reshape(-1, n, post)


def _dense(m: Tensor, n: int, depth: int, inverse: bool) -> Tensor:
    """The n×n matrix of the levels with pair matrices ``m`` (depth, 4, n/2) (differentiable):
    the identity pushed through them (levels reversed for the inverse)."""
    out = torch.eye(n, dtype=m.dtype, device=m.device).reshape(n, n, 1)
    for lv in reversed(range(depth)) if inverse else range(depth):
        out = _apply_level(out, m[lv, 0], m[lv, 1], m[lv, 2], m[lv, 3], lv)
    return out.reshape(n, n).t()


def _apply_dense(mat: Tensor, v: Tensor) -> Tensor:
    """mat (n, n) applied to the middle axis of v (P, n, Q): one GEMM when Q = 1."""
    n = mat.shape[0]
    if v.shape[2] == 1:
        return (v.reshape(-1, n) @ mat.t()).reshape(-1, n, 1)
    return torch.matmul(mat, v)


class Butterfly(Bijector):
    """Training form: parameter ``weight`` (depth, 4, n/2)."""

    def __init__(self, shape: tuple[int, ...], depth: int, over: str = "all") -> None:
        super().__init__()
        self.layout = _Layout(shape, over)
        self.shape, self.over, self.depth = tuple(shape), over, depth
        n = self.layout.n
        if depth > max_depth(n):
            raise ValueError(f"butterfly depth {depth} needs 2^{depth} to divide n = {n}")
        theta = torch.randn(depth, n // 2) * 0.3
        zero = torch.zeros(depth, n // 2)
        self.weight = nn.Parameter(torch.stack([theta, zero, zero, zero], 1))

    def matrices(self, dtype: torch.dtype | None = None) -> Tensor:
        """The 2×2 matrices as rows A, B, C, D, shape (depth, 4, n/2)."""
        w = self.weight if dtype is None else self.weight.to(dtype)
        th, al, be, de = w[:, 0], w[:, 1], w[:, 2], w[:, 3]
        c, s = torch.cos(th), torch.sin(th)
        ea, ed = torch.exp(al), torch.exp(de)
        return torch.stack([c * ea, c * be - s * ed, s * ea, s * be + c * ed], 1)

    def inverse_matrices(self, dtype: torch.dtype | None = None) -> Tensor:
        """Rows of the inverse 2×2 matrices [[D, −B], [−C, A]] / (AD − BC), (depth, 4, n/2)."""
        m = self.matrices(dtype)
        w = self.weight if dtype is None else self.weight.to(dtype)
        r = torch.exp(-(w[:, 1] + w[:, 3]))  # 1 / (AD − BC)
        return torch.stack([m[:, 3] * r, -m[:, 1] * r, -m[:, 2] * r, m[:, 0] * r], 1)

    def dets(self, dtype: torch.dtype | None = None) -> Tensor:
        """AD − BC per level and pair, shape (depth, n/2)."""
        m = self.matrices(dtype)
        return m[:, 0] * m[:, 3] - m[:, 1] * m[:, 2]

    def log_abs_det(self) -> Tensor:
        return (self.weight[:, 1] + self.weight[:, 3]).sum() * self.layout.reps

    def check(self) -> None:
        """Raise a ValueError naming the layer if some pair is numerically singular (e^(α+δ)
        under- or overflows). Host sync: call outside hot paths."""
        w = self.weight.detach().double()
        det = torch.exp(w[:, 1] + w[:, 3])
        ok = torch.isfinite(det) & (det > 1e-300) & torch.isfinite(w).all(1)
        if det.numel() and not bool(ok.all()):
            bad = int((~ok).sum())
            raise ValueError(
                f"butterfly {self.node_id or '?'} (line {self.source_line}): {plural(bad, '2×2 pair')} "
                f"{'is' if bad == 1 else 'are'} singular or not finite (A·D − B·C = e^(α+δ) out of range), "
                "the layer is not invertible"
            )

    def _levels(self, x: Tensor, m: Tensor, inverse: bool) -> Tensor:
        """Apply the levels with pair matrices ``m`` (depth, 4, n/2), reversed for the inverse.
        For n ≤ DENSE_MAX the levels are first multiplied into one n×n matrix (one GEMM)."""
        v = self.layout.to3(x)
        if self.layout.n <= DENSE_MAX:
            v = _apply_dense(_dense(m, self.layout.n, self.depth, inverse), v)
        else:
            for lv in reversed(range(self.depth)) if inverse else range(self.depth):
                v = _apply_level(v, m[lv, 0], m[lv, 1], m[lv, 2], m[lv, 3], lv)
        return self.layout.back(v)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self._levels(x, self.matrices(x.dtype), inverse=False)
        return y, batch_constant(self.log_abs_det(), x)

    def inverse(self, y: Tensor) -> Tensor:
        return self._levels(y, self.inverse_matrices(y.dtype), inverse=True)

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """One pass: the closed-form inverse levels and the constant log-det r·Σ (α + δ)."""
        return self.inverse(y), batch_constant(self.log_abs_det(), y)

    def matrix(self, inverse: bool = False) -> Tensor:
        """The dense n×n matrix M (or M⁻¹) along the mixed axis, float64 (identity pushed through)."""
        with torch.no_grad():
            m = self.inverse_matrices(torch.float64) if inverse else self.matrices(torch.float64)
            return _dense(m, self.layout.n, self.depth, inverse)

    def _frozen(self) -> "FrozenButterfly":
        self.check()
        out = FrozenButterfly(self)
        return out


class FrozenButterfly(Bijector):
    """Inference form: dense M and M⁻¹ (n ≤ DENSE_MAX) or per-level pairs and inverse pairs."""

    def __init__(self, src: Butterfly) -> None:
        super().__init__()
        dtype = src.weight.dtype
        self.layout, self.depth, self.shape = src.layout, src.depth, src.shape
        self.dense = src.layout.n <= DENSE_MAX
        with torch.no_grad():
            w = src.weight.detach().double()
            ld = (w[:, 1] + w[:, 3]).sum() * src.layout.reps
            self.register_buffer("logdet", ld.to(dtype))
            if self.dense:
                self.register_buffer("m", src.matrix().to(dtype))
                self.register_buffer("m_inv", src.matrix(inverse=True).to(dtype))
            else:
                self.register_buffer("w", src.matrices(torch.float64).to(dtype))
                self.register_buffer("w_inv", src.inverse_matrices(torch.float64).to(dtype))

    def _run(self, x: Tensor, inverse: bool) -> Tensor:
        v = self.layout.to3(x)
        if self.dense:
            v = _apply_dense(self.m_inv if inverse else self.m, v)
        else:
            w = self.w_inv if inverse else self.w
            levels = reversed(range(self.depth)) if inverse else range(self.depth)
            for lv in levels:
                v = _apply_level(v, w[lv, 0], w[lv, 1], w[lv, 2], w[lv, 3], lv)
        return self.layout.back(v)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(x, False), batch_constant(self.logdet, x)

    def inverse(self, y: Tensor) -> Tensor:
        return self._run(y, True)

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(y, True), batch_constant(self.logdet, y)


@lowering("butterfly")
def lower_butterfly(args, shape, bodies=None):
    return Butterfly(tuple(shape), ButterflyKind.resolved_depth(args, shape), args.over)
