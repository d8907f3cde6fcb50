"""The runtime contract of a bijector module, and :class:`Chain` (a sequence of them).

Conventions (every layer kind follows them):
    * ``forward(x) -> (y, logdet)``: ``x`` of shape (B, *in_shape), ``y`` of shape (B, *out_shape),
      ``logdet`` of shape (B,) = log|det ∂y/∂x| per sample, in the dtype of ``x``.
    * ``inverse(y) -> x``: the exact inverse of ``forward``.
    * device and dtype follow the input; no ``.item()`` or host synchronisation in either direction.
    * ``frozen()`` returns an inference module with the same forward/inverse in which
      weight-only quantities (W⁻¹, constant log-dets, ...) are precomputed as buffers. It may
      return ``self`` when there is nothing to precompute.
    * ``factor_out`` layers (``split``) implement ``split(x) -> (kept, latent)`` and
      ``merge(kept, latent) -> x`` instead (their log-det is 0).
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Bijector", "Chain", "batch_constant"]


def batch_constant(value: Tensor, x: Tensor) -> Tensor:
    """Expand a scalar tensor to shape (B,) for the batch of ``x`` (export-friendly)."""
    return value.to(dtype=x.dtype).reshape(1).expand(x.shape[0])


class Bijector(nn.Module):
    """Base class of every layer module. Subclasses implement ``forward`` and ``inverse``."""

    #: set by the compiler: the node id and source line, used in runtime error messages.
    node_id: str = ""
    source_line: int = 0
    factor_out: bool = False

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def frozen(self) -> "Bijector":
        """Inference form with weight-only quantities precomputed (default: ``self``)."""
        return self

    def extra_repr(self) -> str:
        return f"node={self.node_id!r}, line={self.source_line}" if self.node_id else ""


class Chain(Bijector):
    """Bijectors applied in order; log-dets add up. Used for bodies of composite kinds."""

    def __init__(self, layers: list[Bijector]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y

    def frozen(self) -> "Chain":
        return Chain([layer.frozen() for layer in self.layers])
