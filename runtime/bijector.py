"""The runtime contract of a bijector module, and :class:`Chain` (a sequence of them).

Conventions (every layer module follows them):
    * ``forward(x) -> (y, logdet)``: ``x`` of shape (B, *in_shape), ``y`` of shape (B, *out_shape),
      ``logdet`` of shape (B,) = log|det ∂y/∂x| per sample, in the dtype of ``x``.
    * ``inverse(y) -> x``: the exact inverse of ``forward``.
    * ``inverse_with_log_det(y) -> (x, logdet)``: the inverse together with the FORWARD log-det at
      the returned x (log|det ∂y/∂x|, (B,)), so that a sample is scored in the same pass:
      log p(x) = log p_prior(z) + Σ logdet. The base class falls back to ``inverse`` followed by
      ``forward`` (two passes); every built-in layer overrides it with a one-pass form.
    * context (conditional flows): a layer that reads the flow's context sets ``uses_context`` (an
      instance attribute, set by its lowering) and then takes it as a second argument in all three
      methods: ``forward(x, context)``, ``inverse(y, context)``, ``inverse_with_log_det(y, context)``.
      ``context`` is a :class:`flowdsl.runtime.context.ContextValue` (the raw context and its
      embedding). Layers without ``uses_context`` are called without it (they pass it through);
      :func:`call_forward` / :func:`call_inverse` / :func:`call_inverse_with_log_det` dispatch.
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
from typing import Any, ClassVar

from torch import Tensor, nn

__all__ = [
    "Bijector",
    "Chain",
    "Provenance",
    "batch_constant",
    "call_forward",
    "call_inverse",
    "call_inverse_with_log_det",
]


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
    #: whether the three directions take the context as a second argument (see the module docstring)
    uses_context: bool = False
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

    def inverse_with_log_det(self, y: Tensor, *context: Any) -> tuple[Tensor, Tensor]:
        """(x, log|det ∂y/∂x| at x): the inverse and the forward log-det of the returned x.

        Fallback for layers without a one-pass form: ``inverse`` then ``forward`` (two passes)."""
        x = self.inverse(y, *context)
        return x, self(x, *context)[1]

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


def call_forward(layer: Bijector, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
    """``layer(x)``, with ``context`` when the layer uses one."""
    return layer(x, context) if layer.uses_context else layer(x)


def call_inverse(layer: Bijector, y: Tensor, context: Any = None) -> Tensor:
    """``layer.inverse(y)``, with ``context`` when the layer uses one."""
    return layer.inverse(y, context) if layer.uses_context else layer.inverse(y)


def call_inverse_with_log_det(layer: Bijector, y: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
    """``layer.inverse_with_log_det(y)``, with ``context`` when the layer uses one."""
    return layer.inverse_with_log_det(y, context) if layer.uses_context else layer.inverse_with_log_det(y)


class Chain(Bijector):
    """Bijectors applied in order; log-dets add up. Used for bodies of composite kinds.

    The chain uses the context when any of its layers does, and hands it to those layers only."""

    def __init__(self, layers: list[Bijector]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.uses_context = any(layer.uses_context for layer in layers)

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = call_forward(layer, x, context)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor, context: Any = None) -> Tensor:
        for layer in reversed(self.layers):
            y = call_inverse(layer, y, context)
        return y

    def inverse_with_log_det(self, y: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        logdet = y.new_zeros(y.shape[0])
        for layer in reversed(self.layers):
            y, ld = call_inverse_with_log_det(layer, y, context)
            logdet = logdet + ld
        return y, logdet

    def _frozen(self) -> "Chain":
        return Chain([layer.frozen() for layer in self.layers])
