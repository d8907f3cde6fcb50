"""The runtime contract of a bijector module, and :class:`Chain` (a sequence of them).

Conventions (every layer module follows them):
    * ``forward(x) -> (y, logdet)``: ``x`` of shape (B, *in_shape), ``y`` of shape (B, *out_shape),
      ``logdet`` of shape (B,) = log|det ∂y/∂x| per sample, in the dtype of ``x``.
    * ``inverse(y) -> x``: the exact inverse of ``forward``.
    * device and dtype follow the input; no ``.item()`` or host synchronisation in either direction.
    * ``frozen()`` returns an inference module with the same forward/inverse in which
      weight-only quantities (W⁻¹, constant log-dets, ...) are precomputed as buffers. Subclasses
      implement ``_frozen()`` (default: ``self``); the base class carries the provenance over.
    * ``factor_out`` layers (``split``) implement ``split(x) -> (kept, latent)`` and
      ``merge(kept, latent) -> x`` instead (their log-det is 0).

Declared protocols (class attributes and methods with defaults here, overridden where they apply):
    * ``factor_out``: the layer emits part of its input as latents (``split``/``merge``);
    * ``moves_positions``: the layer only rearranges entries (``squeeze``); the model pushes an
      index tensor through it to lay out the latents;
    * ``latent_levels()``: a per-position level of the latents it produces (RG-Flow), or None.

Provenance: ``provenance`` (node id and source line of the graph node the module lowers) is set
once by the lowering (``flowdsl.runtime.model``) and used in runtime error messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

__all__ = ["Bijector", "Chain", "Provenance", "batch_constant"]


def batch_constant(value: Tensor, x: Tensor) -> Tensor:
    """Expand a scalar tensor to shape (B,) for the batch of ``x`` (export-friendly)."""
    return value.to(dtype=x.dtype).reshape(1).expand(x.shape[0])


@dataclass(frozen=True)
class Provenance:
    """Where a module comes from: the graph node id and the spec line (0 when unknown)."""

    node_id: str = ""
    line: int = 0


class Bijector(nn.Module):
    """Base class of every layer module. Subclasses implement ``forward`` and ``inverse``."""

    factor_out: ClassVar[bool] = False
    moves_positions: ClassVar[bool] = False
    provenance: Provenance = Provenance()

    @property
    def node_id(self) -> str:
        return self.provenance.node_id

    @property
    def source_line(self) -> int:
        return self.provenance.line

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def latent_levels(self) -> Tensor | None:
        """Per-position level of the latents this layer produces (input shape), or None."""
        return None

    def frozen(self) -> "Bijector":
        """Inference form with weight-only quantities precomputed, with this module's provenance."""
        out = self._frozen()
        if out is not self:
            out.provenance = self.provenance
        return out

    def _frozen(self) -> "Bijector":
        """The inference form (override when there is something to precompute)."""
        return self

    def extra_repr(self) -> str:
        p = self.provenance
        return f"node={p.node_id!r}, line={p.line}" if p.node_id else ""


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

    def _frozen(self) -> "Chain":
        return Chain([layer.frozen() for layer in self.layers])
