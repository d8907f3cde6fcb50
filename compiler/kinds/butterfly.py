"""``butterfly(depth=auto|int, over=all|channels|width|height)``: ButterflyFlow's invertible
butterfly layer, language side.

Shapes: (C, H, W) or (D,) -> unchanged. The layer mixes vectors of n entries (``mixed_size``);
level ℓ needs 2^(ℓ+1) | n, so the largest depth is the 2-adic valuation of n (``max_depth``).
Parameters: four per pair and level, depth·4·n/2.
"""

from __future__ import annotations

import math
from typing import Literal, Union

from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer
from flowdsl.wording import plural

__all__ = ["ButterflyKind", "max_depth", "mixed_size"]


def max_depth(n: int) -> int:
    """The largest d with 2^d dividing n (n ≥ 1)."""
    d = 0
    while n % (2 ** (d + 1)) == 0:
        d += 1
    return d


def mixed_size(shape: tuple[int, ...], over: str) -> int:
    """Length n of the vectors the butterfly mixes for input ``shape``."""
    if over == "all":
        return math.prod(shape)
    if over == "channels":
        return shape[0]
    if over == "height":
        return shape[1]
    return shape[2]


@register_layer
class ButterflyKind(LayerKind):
    name = "butterfly"
    description = "invertible butterfly layer (ButterflyFlow): per level a free 2×2 matrix per pair"
    constant_logdet = True

    class Args(ArgsModel):
        depth: Union[Literal["auto"], int] = "auto"
        over: Literal["all", "channels", "width", "height"] = "all"

    @classmethod
    def resolved_depth(cls, args, shape) -> int:
        n = mixed_size(tuple(shape), args.over)
        return max_depth(n) if args.depth == "auto" else int(args.depth)

    @classmethod
    def infer_shape(cls, args, shape, ctx):
        shape = tuple(shape)
        if args.over in ("width", "height") and len(shape) != 3:
            ctx.fail(
                f"butterfly over={args.over} needs an image input (C, H, W); this input is a vector of "
                f"{plural(math.prod(shape), 'entry')} (use over=all or over=channels)",
                arg="over",
            )
        if len(shape) not in (1, 3):
            ctx.fail(f"butterfly needs a (C, H, W) or (D,) input, got shape {shape}")
        n = mixed_size(shape, args.over)
        what = {
            "all": f"the flattened size {'·'.join(map(str, shape))} = {n}"
            if len(shape) == 3
            else f"the vector size {n}",
            "channels": f"the channel count {n}",
            "width": f"the width {n}",
            "height": f"the height {n}",
        }[args.over]
        top = max_depth(n)
        if args.depth == "auto":
            if top == 0:
                ctx.warn(
                    f"over={args.over}: {what} is odd, so depth=auto is 0 and the layer is the identity", arg="over"
                )
            return shape
        d = args.depth
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            ctx.fail(f"butterfly depth must be a positive integer or auto, got {d!r}", arg="depth")
        if d > top:
            ctx.fail(
                f"butterfly depth {d} needs 2^{d} = {2**d} to divide {what} (over={args.over}); "
                f"the largest valid depth is {top}",
                arg="depth",
            )
        return shape

    @classmethod
    def param_count(cls, args, shape) -> int:
        return cls.resolved_depth(args, shape) * 4 * (mixed_size(tuple(shape), args.over) // 2)
