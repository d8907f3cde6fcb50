"""``prior student_t(df=5.0, learned=false)``: a factorised Student-t base (heavy tails), language
side: the argument rules (finite df > 0) and the parameter count.

``learned=true`` learns a location, a log-scale and a log-df per latent entry (3·numel
parameters); otherwise the prior is the standard t with ``df`` degrees of freedom per entry.
"""

from __future__ import annotations

import math

from flowdsl.compiler.registry import ArgsModel, PriorKind, register_prior

__all__ = ["StudentTPriorKind"]

#: largest accepted df (beyond it the t is a normal to float precision; use ``gaussian``)
MAX_DF = 1e6


@register_prior
class StudentTPriorKind(PriorKind):
    name = "student_t"
    description = "factorised Student-t with df degrees of freedom (heavy tails); learned location, scale and df"

    class Args(ArgsModel):
        df: float = 5.0
        learned: bool = False

    @classmethod
    def check(cls, args, shape, ctx) -> None:
        df = args.df
        if not math.isfinite(df):
            ctx.fail(f"student_t df must be a finite number, got {df!r}", arg="df")
        if not df > 0:
            ctx.fail(f"student_t df (degrees of freedom) must be > 0, got {df:g}", arg="df")
        if df > MAX_DF:
            ctx.fail(
                f"student_t df={df:g} is above {MAX_DF:g}: the t is a normal to float precision there; "
                "write `prior gaussian` instead",
                arg="df",
            )

    @classmethod
    def param_count(cls, args, shape) -> int:
        return 3 * math.prod(shape) if args.learned else 0
