"""``prior gaussian(learned=false|true)``: the standard normal base, or a diagonal Gaussian with a
learned mean and log-scale per latent entry (2·numel parameters), language side."""

from __future__ import annotations

import math

from flowdsl.compiler.registry import ArgsModel, PriorKind, register_prior

__all__ = ["GaussianPriorKind"]


@register_prior
class GaussianPriorKind(PriorKind):
    name = "gaussian"

    class Args(ArgsModel):
        learned: bool = False

    @classmethod
    def param_count(cls, args, shape) -> int:
        return 2 * math.prod(shape) if args.learned else 0
