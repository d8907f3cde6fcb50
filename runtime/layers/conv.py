"""``conv(kind=emerging|periodic, kernel=k)``: invertible k×k convolutions (Hoogeboom et al. 2019).

Shapes: x (B, C, H, W) -> y (B, C, H, W) (images only; rejected on vectors).
Periodic: any k (odd or even) with k ≤ H and k ≤ W (a wider circular kernel would wrap onto
itself); taps at offsets −(k−1)//2 … k//2 on each axis (PyTorch's padding='same' convention,
centred for odd k). Emerging: k odd (its two masked halves share the centre tap); each
masked half is a one-sided ((k+1)/2)² conv, so (k+1)/2 ≤ H and ≤ W (no tap that can never touch
the image); larger kernels than the image are otherwise fine with zero padding.

``kind=emerging`` (:class:`~flowdsl.runtime.layers.emerging_conv.EmergingConv`): two masked
autoregressive convolutions, y = K2 ⋆ (K1 ⋆ x) + b with zero padding; K1 reads the bottom-right
quadrant (centre tap channel-lower-triangular), K2 the top-left one (upper-triangular);
log|det J| = H·W·Σ_o (log|d1_o| + log|d2_o|) from the centre diagonals d = sign·exp(log d).
Inverse: a tiled wavefront, exact after the static dependency depth (see that module for the
sequential step counts: 30 steps at 3×32×32 with the default tiles, 14 with 8×8 tiles, instead of
126 for a pixel wavefront and 2048 for a pixel-by-pixel back-substitution).

``kind=periodic`` (:class:`~flowdsl.runtime.layers.periodic_conv.PeriodicConv`): circular
convolution; log|det J| = Σ_{u,v} log|det K̂(u, v)| over all H·W frequencies (rfft2 columns
weighted 1, 2, …, 2, 1 — the last 1 only for even W); inverse by per-frequency C×C solves.

Both have input-independent log-dets and ``frozen()`` forms that export to ONNX without linalg
or DFT operators.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer
from flowdsl.runtime.layers.emerging_conv import EmergingConv
from flowdsl.runtime.layers.periodic_conv import PeriodicConv

__all__ = ["ConvKind"]


@register_layer
class ConvKind(LayerKind):
    name = "conv"
    description = "invertible k×k convolution: emerging (two masked AR convs) or periodic (circular, Fourier-invertible)"
    spatial = True
    constant_logdet = True

    class Args(ArgsModel):
        kind: Literal["emerging", "periodic"] = "emerging"
        kernel: int = Field(3, ge=1)

    @classmethod
    def infer_shape(cls, args, shape, ctx):
        shape = tuple(shape)
        if len(shape) != 3:
            ctx.fail(f"conv(kind={args.kind}) needs an image input (C, H, W); this input is a vector of {shape[0]} entries")
        c, h, w = shape
        k = args.kernel
        if k < 1:
            ctx.fail(f"conv kernel must be a positive integer, got {k}", arg="kernel")
        if args.kind == "emerging" and k % 2 == 0:
            ctx.fail(
                f"conv(kind=emerging) needs an odd kernel (its two masked halves share the centre tap), "
                f"got {k}; use {k - 1} or {k + 1} — or kind=periodic, which takes even kernels",
                arg="kernel",
            )
        if args.kind == "periodic" and (k > h or k > w):
            # a circular kernel wider than the image would wrap onto itself (aliased taps)
            side, size = ("height", h) if k > h else ("width", w)
            ctx.fail(
                f"conv(kind=periodic) kernel {k} does not fit in the image: {side} is {size} "
                f"(input {c}×{h}×{w}); a periodic kernel must be at most {min(h, w)}",
                arg="kernel",
            )
        reach = (k + 1) // 2  # each masked AR conv is a one-sided ((k+1)/2)² conv
        if args.kind == "emerging" and (reach > h or reach > w):
            side, size = ("height", h) if reach > h else ("width", w)
            ctx.fail(
                f"conv(kind=emerging) kernel {k} does not fit in the image: its masked halves reach "
                f"{reach} pixels but the {side} is {size} (input {c}×{h}×{w}); use a kernel of at most "
                f"{2 * min(h, w) - 1}",
                arg="kernel",
            )
        return shape

    @classmethod
    def build(cls, args, shape, bodies=None):
        if args.kind == "emerging":
            return EmergingConv(tuple(shape), args.kernel)
        return PeriodicConv(tuple(shape), args.kernel)
