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

from flowdsl.runtime.layers.emerging_conv import EmergingConv
from flowdsl.runtime.layers.lowering import lowering
from flowdsl.runtime.layers.periodic_conv import PeriodicConv

__all__ = ["lower_conv"]


@lowering("conv")
def lower_conv(args, shape, bodies=None):
    if args.kind == "emerging":
        return EmergingConv(tuple(shape), args.kernel)
    return PeriodicConv(tuple(shape), args.kernel)
