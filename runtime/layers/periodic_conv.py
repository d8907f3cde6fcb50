"""Periodic (circular, Fourier-invertible) convolution (Hoogeboom et al. 2019, "periodic").

Not a kind module by itself: ``conv(kind=periodic)`` (``conv.py``) builds :class:`PeriodicConv`.

Shapes: x (B, C, H, W) -> y (B, C, H, W); kernel w (C, C, k, k), any k ≥ 1 with k ≤ H and
k ≤ W, odd or even. Taps sit at offsets δ ∈ [−lo, hi] on each axis, lo = (k−1)//2, hi = k//2
(PyTorch's padding='same' convention; for odd k, lo = hi = (k−1)/2, the centred kernel). Indices
of the image are taken modulo (H, W) (torus).

    forward   y[o, p] = Σ_{ch, δ∈[−lo,hi]²} w[o, ch, lo+δ] · x[ch, (p+δ) mod (H, W)]
              (circular padding by lo before and hi after on each spatial axis, then a VALID
              cross-correlation: one conv2d)
    spectrum  with K[o, ch, q] = w[o, ch, lo+δ] placed at q = δ mod (H, W) (a C×C×H×W array;
              k ≤ H, W keeps the k offsets distinct modulo the size),
              K̂(u, v) = Σ_q K[:, :, q] e^{+2πi(uq_h/H + vq_w/W)} = conj(FFT2(K))(u, v)  ∈ ℂ^{C×C},
              and FFT2(y)(u, v) = K̂(u, v) · FFT2(x)(u, v) for every frequency.
    log-det   log|det J| = Σ_{u<H, v<W} log|det K̂(u, v)|
                         = Σ_{u<H} Σ_{v≤⌊W/2⌋} m_v · log|det K̂(u, v)|   (rfft2 columns),
              m_0 = 1, m_{W/2} = 1 for even W, every other column m_v = 2: column v and W−v are
              complex conjugates (K̂(−u, −v) = conj K̂(u, v)) and have the same |det|.
    inverse   X̂(u, v) = K̂(u, v)⁻¹ Ŷ(u, v), x = IRFFT2(X̂). Exact, no sequential steps.
    init      N(0, 0.02²) plus a random orthogonal C×C matrix on the tap at offset (0, 0),
              index (lo, lo) (the centre tap for odd k).

Training form: ``torch.fft`` (rfft2 / irfft2) with K̂⁻¹ from a complex128 inverse per frequency.
Inference form (:class:`FrozenPeriodicConv`, real arithmetic only, ONNX-exportable, no DFT op):
the 2-D real DFT is two real matrix products with precomputed cos/sin matrices (rDFT along W,
full DFT along H, the real and imaginary parts carried as an explicit axis of size 2), the
per-frequency mixing is one real einsum with the (2C)×(2C) real form [[Re, −Im], [Im, Re]] of
K̂⁻¹, and the inverse DFT folds the irfft column weights m_v and 1/(H·W) into its matrices. All
constant matrices are computed in float64 and stored in the module's dtype. Cost per image:
O(C·H·W·(H+W) + H·W·C²) multiply-adds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowdsl.runtime.bijector import Bijector, batch_constant
from flowdsl.runtime.fusion.ops.kernels import conv_act

__all__ = ["PeriodicConv", "FrozenPeriodicConv", "column_weights"]


def column_weights(w: int) -> Tensor:
    """m_v for the rfft columns v = 0 … ⌊W/2⌋ (float64): 1 for v = 0 and v = W/2, else 2."""
    wr = w // 2 + 1
    m = torch.full((wr,), 2.0, dtype=torch.float64)
    m[0] = 1.0
    if w % 2 == 0:
        m[-1] = 1.0
    return m


class PeriodicConv(Bijector):
    """Training form: parameter ``weight`` (C, C, k, k)."""

    def __init__(self, shape: tuple[int, ...], kernel: int = 3) -> None:
        super().__init__()
        if len(shape) != 3 or kernel < 1 or kernel > shape[1] or kernel > shape[2]:
            raise ValueError(f"periodic conv needs (C, H, W) with a kernel 1 ≤ k ≤ H, W; got {shape}, k={kernel}")
        C, H, W = shape
        self.shape = tuple(shape)
        self.kernel_size = kernel
        self.lo, self.hi = (kernel - 1) // 2, kernel // 2  # tap offsets δ ∈ [−lo, hi]
        w = torch.randn(C, C, kernel, kernel) * 0.02
        w[:, :, self.lo, self.lo] += torch.linalg.qr(torch.randn(C, C))[0]
        self.weight = nn.Parameter(w)
        self.register_buffer("col_weights", column_weights(W), persistent=False)

    # spectrum ------------------------------------------------------------------------
    def spectrum(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """K̂ on the rfft grid, complex, shape (H, ⌊W/2⌋+1, C, C), computed from ``weight`` in ``dtype``."""
        C, H, W = self.shape
        k, lo = self.kernel_size, self.lo
        placed = F.pad(self.weight.to(dtype), (0, W - k, 0, H - k))
        placed = torch.roll(placed, shifts=(-lo, -lo), dims=(2, 3))  # tap lo+δ -> q = δ mod (H, W)
        return torch.conj(torch.fft.rfft2(placed)).permute(2, 3, 0, 1)

    def log_abs_det(self, dtype: torch.dtype = torch.float64) -> Tensor:
        return self._log_abs_det_of(self.spectrum(dtype))

    def _log_abs_det_of(self, spec: Tensor) -> Tensor:
        """Σ_u Σ_v m_v log|det K̂(u, v)| of a spectrum from :meth:`spectrum`."""
        lad = torch.linalg.slogdet(spec)[1]  # (H, Wr)
        return (lad * self.col_weights.to(lad.dtype)).sum()

    # bijector ------------------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        lo, hi = self.lo, self.hi
        xp = F.pad(x, (lo, hi, lo, hi), mode="circular") if hi > 0 else x
        y = F.conv2d(xp, self.weight.to(x.dtype))
        return y, batch_constant(self.log_abs_det(), x)

    def inverse(self, y: Tensor) -> Tensor:
        return self._solve(y, self.spectrum(torch.float64))

    def _solve(self, y: Tensor, spec: Tensor) -> Tensor:
        """x = IRFFT2(K̂⁻¹ · RFFT2(y)) for the spectrum ``spec`` (H, Wr, C, C)."""
        C, H, W = self.shape
        kinv = torch.linalg.inv(spec)  # (H, Wr, C, C) complex128
        yh = torch.fft.rfft2(y)  # (B, C, H, Wr)
        xh = torch.einsum("uvoi,biuv->bouv", kinv.to(yh.dtype), yh)
        return torch.fft.irfft2(xh, s=(H, W))

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """One pass: one spectrum gives both K̂⁻¹ (the solve) and the constant log-det."""
        spec = self.spectrum(torch.float64)
        return self._solve(y, spec), batch_constant(self._log_abs_det_of(spec), y)

    def _frozen(self) -> "FrozenPeriodicConv":
        out = FrozenPeriodicConv(self)
        return out


class FrozenPeriodicConv(Bijector):
    """Inference form in real arithmetic; buffers ``weight``, ``logdet``, DFT matrices, ``kinv``."""

    def __init__(self, src: PeriodicConv) -> None:
        super().__init__()
        C, H, W = src.shape
        dtype = src.weight.dtype
        self.shape, self.lo, self.hi = src.shape, src.lo, src.hi
        wr = W // 2 + 1
        with torch.no_grad():
            spec = src.spectrum(torch.float64)
            sv = torch.linalg.svdvals(spec)
            smin, smax = sv.min(), sv.max()
            if not bool(torch.isfinite(sv).all()) or not bool(smin > smax * 1e-12):
                raise ValueError(
                    f"periodic conv {src.node_id or '?'} (line {src.source_line}): the kernel is singular "
                    f"at some frequency (smallest singular value {float(smin):.3g}, largest {float(smax):.3g})"
                )
            ld = (torch.linalg.slogdet(spec)[1] * column_weights(W).to(spec.device)).sum()
            kinv = torch.linalg.inv(spec)  # (H, Wr, C, C)
            kr, ki = kinv.real, kinv.imag
            # real form of the complex mixing: [re; im]_out = [[kr, -ki], [ki, kr]] [re; im]_in
            kreal = torch.stack([torch.stack([kr, -ki], 3), torch.stack([ki, kr], 3)], 2)  # (H, Wr, 2, C, 2, C)
            dev = spec.device
            h = torch.arange(H, dtype=torch.float64, device=dev)
            w = torch.arange(W, dtype=torch.float64, device=dev)
            v = torch.arange(wr, dtype=torch.float64, device=dev)
            ang_w = 2 * math.pi * torch.outer(w, v) / W  # (W, Wr)
            ang_h = 2 * math.pi * torch.outer(h, h) / H  # (H, H)
            ch, sh = torch.cos(ang_h), torch.sin(ang_h)
            # rDFT along W: Ŷ = Σ_w y e^{-iθ} -> re: cos, im: -sin           (W, 2, Wr)
            fw = torch.stack([torch.cos(ang_w), -torch.sin(ang_w)], 1)
            # DFT along H of re + i·im with e^{-iφ}: [re'; im'] = [[ch, sh], [-sh, ch]] [re; im]   (2, 2, H, H)
            fh = torch.stack([torch.stack([ch, sh]), torch.stack([-sh, ch])])
            # inverse DFT along H with e^{+iφ}/H: [[ch, -sh], [sh, ch]] / H
            ih = torch.stack([torch.stack([ch, -sh]), torch.stack([sh, ch])]) / H
            # inverse rDFT along W (real part): x = Σ_v m_v (re cos θ − im sin θ) / W        (2, Wr, W)
            m = column_weights(W).to(dev)
            iw = torch.stack([(m[:, None] * torch.cos(ang_w).t()), -(m[:, None] * torch.sin(ang_w).t())]) / W
            for name, t in (
                ("weight", src.weight.detach().double()),
                ("logdet", ld),
                ("kinv", kreal),
                ("fw", fw),
                ("fh", fh),
                ("ih", ih),
                ("iw", iw),
            ):
                self.register_buffer(name, t.to(dtype))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        lo, hi = self.lo, self.hi
        xp = F.pad(x, (lo, hi, lo, hi), mode="circular") if hi > 0 else x
        # conv_act: oneDNN on the CPU (no batch-size guard under torch.compile(dynamic=True)),
        # F.conv2d for float64, autograd through x, other devices and ONNX export
        return conv_act(xp, self.weight, None, 0, "none", None, None), batch_constant(self.logdet, x)

    def inverse(self, y: Tensor) -> Tensor:
        a = torch.einsum("bchw,wsv->bcshv", y, self.fw)  # rDFT along W      (B, C, 2, H, Wr)
        a = torch.einsum("tshu,bcsuv->bcthv", self.fh, a)  # DFT along H     (B, C, 2, H, Wr)
        a = torch.einsum("uvtosi,bisuv->botuv", self.kinv, a)  # K̂⁻¹ per frequency
        a = torch.einsum("tshu,bcsuv->bcthv", self.ih, a)  # inverse DFT along H
        return torch.einsum("bcshv,svw->bchw", a, self.iw)  # inverse rDFT along W (real part)

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.inverse(y), batch_constant(self.logdet, y)
