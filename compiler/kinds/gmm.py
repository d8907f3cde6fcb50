"""``prior gmm(components=4, learned=true)``: a diagonal Gaussian mixture over the whole latent,
language side: the argument rules and the parameter count.

K components, each a mean and a log-scale of the latent's shape, plus K mixture logits:
2·K·numel + K parameters when ``learned``, none otherwise (the runtime keeps them as buffers).
"""

from __future__ import annotations

import math

from flowdsl.compiler.limits import LIMITS
from flowdsl.compiler.registry import ArgsModel, PriorKind, register_prior

__all__ = ["GMMPriorKind", "gmm_table_size"]


def gmm_table_size(components: int, shape) -> int:
    """Entries of the mixture's tables (means, log-scales, logits) for latents of ``shape``."""
    return 2 * components * math.prod(shape) + components


@register_prior
class GMMPriorKind(PriorKind):
    name = "gmm"
    description = "diagonal Gaussian mixture over the whole latent: K means, log-scales and weights"

    class Args(ArgsModel):
        components: int = 4
        learned: bool = True

    @classmethod
    def check(cls, args, shape, ctx) -> None:
        k = args.components
        if k < 1:
            ctx.fail(f"gmm components must be ≥ 1 (the number of mixture components), got {k}", arg="components")
        if k > LIMITS.max_dim:
            ctx.fail(f"gmm components={k} is above the limit of {LIMITS.max_dim} (FLOWDSL_MAX_DIM)", arg="components")
        size = gmm_table_size(k, shape)
        if size > LIMITS.max_params:
            ctx.fail(
                f"gmm with {k} components over a latent of {math.prod(shape):,} entries needs {size:,} "
                f"means, scales and weights, above the limit of {LIMITS.max_params:,} (FLOWDSL_MAX_PARAMS)",
                arg="components",
            )

    @classmethod
    def param_count(cls, args, shape) -> int:
        return gmm_table_size(args.components, shape) if args.learned else 0
