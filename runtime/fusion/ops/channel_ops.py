"""The inference modules a merged channel map is emitted as.

    ChannelMonomial   y = s ⊙ x[:, π] + b        (gather and/or one fused multiply-add)
    ChannelDense      y = W x + b                 (one 1×1 convolution, or F.linear on vectors)

Both store their float64-derived quantities (W, W⁻¹, b, −W⁻¹b, 1/s, the constant log-det
H·W·log|det A|) as buffers in the module dtype; the log-det stays float32 under 16-bit casts.
The inverse of ChannelDense is one 1×1 map with W⁻¹ and bias −W⁻¹b; on images the map is one
matmul over the channels (``kernels.pointwise_conv``).
``inverse_with_log_det`` returns the inverse and the constant log-det (one pass, float32 under
16-bit casts like ``forward``).
:func:`emit` picks the module for a :class:`~flowdsl.runtime.fusion.ops.channel_map.ChannelMap`
(nothing at all for the identity).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flowdsl.runtime.fusion.ops.channel_map import ChannelMap
from flowdsl.runtime.fusion.ops.kernels import InferenceModule, const_logdet, pointwise_conv

__all__ = ["ChannelMonomial", "ChannelDense", "emit"]


def _view(t: Tensor, rank: int) -> Tensor:
    return t.reshape(-1, *([1] * (rank - 1)))


class ChannelMonomial(InferenceModule):
    """y[:, c] = s[c]·x[:, π(c)] + b[c]; buffers ``perm``/``inv_perm`` (if π ≠ id), ``scale``,
    ``inv_scale``, ``bias`` (if not trivial) and ``logdet``."""

    def __init__(self, cmap: ChannelMap, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        super().__init__()
        rank = len(shape)
        n = cmap.n
        ar = torch.arange(n, device=cmap.perm.device)
        self.has_perm = not bool(torch.equal(cmap.perm, ar))
        self.has_scale = not bool(torch.all(cmap.scale == 1))
        self.has_bias = not bool(torch.all(cmap.bias == 0))
        if self.has_perm:
            self.register_buffer("perm", cmap.perm.clone())
            self.register_buffer("inv_perm", torch.argsort(cmap.perm))
        self.register_buffer("scale", _view(cmap.scale, rank).to(dtype))
        self.register_buffer("inv_scale", _view(1.0 / cmap.scale, rank).to(dtype))
        self.register_buffer("bias", _view(cmap.bias, rank).to(dtype))
        spatial = math.prod(shape[1:]) if rank > 1 else 1
        self.register_buffer("logdet", (cmap.log_abs_det() * spatial).to(dtype))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = x.index_select(1, self.perm) if self.has_perm else x
        if self.has_scale and self.has_bias:
            y = torch.addcmul(self.bias, y, self.scale)
        elif self.has_scale:
            y = y * self.scale
        elif self.has_bias:
            y = y + self.bias
        return y, const_logdet(self.logdet, x)

    def inverse(self, y: Tensor) -> Tensor:
        if self.has_bias:
            y = y - self.bias
        if self.has_scale:
            y = y * self.inv_scale
        return y.index_select(1, self.inv_perm) if self.has_perm else y

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.inverse(y), const_logdet(self.logdet, y)


class ChannelDense(InferenceModule):
    """y = W x + b per position; buffers ``weight``, ``weight_inv`` (C, C, 1, 1 on images),
    ``bias``, ``bias_inv`` = −W⁻¹b, ``logdet``."""

    def __init__(self, cmap: ChannelMap, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        super().__init__()
        self.rank = len(shape)
        a = cmap.matrix()
        a_inv = torch.linalg.inv(a)
        view = (a.shape[0], a.shape[1], 1, 1) if self.rank == 3 else tuple(a.shape)
        self.has_bias = not bool(torch.all(cmap.bias == 0))
        self.register_buffer("weight", a.reshape(view).to(dtype))
        self.register_buffer("weight_inv", a_inv.reshape(view).to(dtype))
        self.register_buffer("bias", cmap.bias.to(dtype))
        self.register_buffer("bias_inv", (-(a_inv @ cmap.bias)).to(dtype))
        spatial = math.prod(shape[1:]) if self.rank > 1 else 1
        self.register_buffer("logdet", (cmap.log_abs_det() * spatial).to(dtype))

    def _apply_map(self, x: Tensor, w: Tensor, b: Tensor, key: str) -> Tensor:
        bias = b if self.has_bias else None
        if self.rank == 1:
            return F.linear(x, w, bias)
        # one matmul over the channels: for the few channels of a flow it beats a oneDNN 1×1
        # convolution (measured 0.3 vs 0.6 ms at 64×12×16×16) and keeps the NCHW layout
        return pointwise_conv(x, w, bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._apply_map(x, self.weight, self.bias, "fwd"), const_logdet(self.logdet, x)

    def inverse(self, y: Tensor) -> Tensor:
        return self._apply_map(y, self.weight_inv, self.bias_inv, "inv")

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.inverse(y), const_logdet(self.logdet, y)


def emit(cmap: ChannelMap, shape: tuple[int, ...], dtype: torch.dtype) -> list[InferenceModule]:
    """The inference modules for ``cmap`` on inputs of ``shape``: [] for the identity."""
    if cmap.is_identity():
        return []
    if cmap.monomial:
        return [ChannelMonomial(cmap, shape, dtype)]
    return [ChannelDense(cmap, shape, dtype)]
