"""``prior laplace(scale=b, learned=false|true, conditional=false|true)``: a factorised Laplace base
(RG-Flow's sparse prior), with a learned location and log-scale per latent entry when ``learned``
(2·numel), language side.

``conditional=true`` (needs a ``context`` statement) makes the location and log-scale functions of
the context, as for ``gaussian`` (parameter counts in :mod:`flowdsl.compiler.context`).
"""

from __future__ import annotations

import math

from pydantic import Field

from flowdsl.compiler.registry import ArgsModel, PriorKind, register_prior

__all__ = ["LaplacePriorKind"]


@register_prior
class LaplacePriorKind(PriorKind):
    name = "laplace"

    class Args(ArgsModel):
        scale: float = Field(default=1.0, gt=0, le=1e6)
        learned: bool = False
        conditional: bool = False

    @classmethod
    def param_count(cls, args, shape) -> int:
        return 2 * math.prod(shape) if args.learned else 0
