"""``prior gaussian(learned=false|true, conditional=false|true)``: the standard normal base, or a
diagonal Gaussian with a learned mean and log-scale per latent entry (2·numel parameters),
language side.

``conditional=true`` (needs a ``context`` statement) makes the mean and log-scale functions of the
context: per-class tables for labels, a zero-initialised linear map of the context embedding for
vectors and images (parameter counts in :mod:`flowdsl.compiler.context`). They replace the constant
ones and are always trained, so ``learned`` adds nothing then.
"""

from __future__ import annotations

import math

from flowdsl.compiler.registry import ArgsModel, PriorKind, register_prior

__all__ = ["GaussianPriorKind"]


@register_prior
class GaussianPriorKind(PriorKind):
    name = "gaussian"

    class Args(ArgsModel):
        learned: bool = False
        conditional: bool = False

    @classmethod
    def param_count(cls, args, shape) -> int:
        return 2 * math.prod(shape) if args.learned else 0
