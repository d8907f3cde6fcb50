"""``logit(alpha=0.05)``: the logit transform of data in [0, 1] (RealNVP's preprocessing), language side.

    p = α + (1 − 2α)·x,   y = log p − log(1 − p),   log|det| = Σ [log(1 − 2α) − log p − log(1 − p)]

``0 ≤ alpha < 0.5`` (``alpha = 0.5`` would squash every input to p = ½, a map with no inverse).
Shapes: (C, H, W) or (D,) -> unchanged; no parameters; elementwise.
"""

from __future__ import annotations

import math

from pydantic import Field

from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer

__all__ = ["LogitKind"]


@register_layer
class LogitKind(LayerKind):
    name = "logit"
    description = "y = logit(α + (1 − 2α)·x) for data in [0, 1]"

    class Args(ArgsModel):
        alpha: float = Field(default=0.05, ge=0.0, lt=0.5, allow_inf_nan=False)

    @classmethod
    def activation_numel(cls, args, shape) -> int:
        """The input and p = α + (1 − 2α)·x (kept for the logs' backward)."""
        return 2 * math.prod(shape)
