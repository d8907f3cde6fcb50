"""A frozen channel-linear bijector: y = W·x + b per pixel, with W⁻¹ and log|det W| precomputed.

This is the inference form of ``conv1x1`` (every parametrisation) and the target of the fusion
rules that merge chains of channel-linear maps (actnorm, 1×1 convs, permutations).

Shapes: x (B, C, H, W) or (B, D); W (C, C); b (C,).

    forward   y = W x + b
    inverse   x = W⁻¹ (y − b)
    log-det   H·W·log|det W|   (a constant, computed once in float64)
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowdsl.runtime.bijector import Bijector, batch_constant

__all__ = ["ChannelLinear", "apply_channel_matrix"]


def apply_channel_matrix(x: Tensor, w: Tensor) -> Tensor:
    """W applied over dim 1 of x: (B, C, *spatial) -> (B, C', *spatial)."""
    if x.dim() == 2:
        return x @ w.t()
    if x.dim() == 4:  # a batched matmul over the pixels (much faster than a 1x1 conv2d on CPU)
        c, h, wd = x.shape[1], x.shape[2], x.shape[3]
        return torch.matmul(w, x.reshape(-1, c, h * wd)).reshape(-1, w.shape[0], h, wd)
    return torch.einsum("oc,bc...->bo...", w, x)


class ChannelLinear(Bijector):
    """Frozen y = W x + b with buffers ``weight``, ``weight_inv``, ``bias``, ``logdet``."""

    def __init__(self, weight: Tensor, bias: Tensor | None, spatial: int, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        w64 = weight.detach().to(torch.float64)
        dtype = dtype or weight.dtype
        b64 = (
            torch.zeros(w64.shape[0], dtype=torch.float64, device=w64.device)
            if bias is None
            else bias.detach().to(torch.float64)
        )
        self.register_buffer("weight", w64.to(dtype))
        self.register_buffer("weight_inv", torch.linalg.inv(w64).to(dtype))
        self.register_buffer("bias", b64.to(dtype))
        self.register_buffer("logdet", (torch.linalg.slogdet(w64)[1] * spatial).to(dtype))
        self.spatial = spatial
        self.has_bias = bias is not None
        self.condition = float(torch.linalg.cond(w64)) if w64.numel() else 1.0

    def warn_if_ill_conditioned(self, node_id: str, line: int, limit: float = 1e7) -> None:
        """Warn (NumericalWarning) when W is so ill-conditioned that its inverse loses precision."""
        if not self.condition < limit:
            import warnings

            from flowdsl.errors import NumericalWarning

            warnings.warn(
                f"layer {node_id} (line {line}) is close to singular: condition number {self.condition:.2e}; "
                "its inverse may lose precision",
                NumericalWarning,
                stacklevel=3,
            )

    def _b(self, x: Tensor) -> Tensor:
        return self.bias.view(-1, *([1] * (x.dim() - 2)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = apply_channel_matrix(x, self.weight)
        if self.has_bias:
            y = y + self._b(x)
        return y, batch_constant(self.logdet, x)

    def inverse(self, y: Tensor) -> Tensor:
        if self.has_bias:
            y = y - self._b(y)
        return apply_channel_matrix(y, self.weight_inv)

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.inverse(y), batch_constant(self.logdet, y)
