"""``permute(kind=reverse|shuffle, seed=s)``: a fixed channel permutation, language side.

Shapes: (C, H, W) or (D,) -> unchanged; no parameters; log-det 0.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer

__all__ = ["PermuteKind"]


@register_layer
class PermuteKind(LayerKind):
    name = "permute"
    description = "fixed channel permutation (reverse or seeded shuffle)"
    constant_logdet = True

    class Args(ArgsModel):
        kind: Literal["reverse", "shuffle"] = "reverse"
        seed: int = Field(default=0, ge=0, le=2**63 - 1)
