"""``rg(kernel=K, levels=auto|int) { disentangler {...} decimator {...} }``: RG-Flow's
hierarchical layer, language side.

Shapes: (C, L, L) -> unchanged; square images, K even, K | L and L/K a power of two; ``auto``
levels H = log2(L/K) + 1. Each level has a disentangler and a decimator body instance acting on
(C, K, K) patches (labels ``level{h}.disentangler`` / ``level{h}.decimator``); the bodies are
nodes of their own, so the layer itself has no parameters.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import StrictInt

from flowdsl.compiler.registry import ArgsModel, BodyInstance, LayerKind, register_layer

__all__ = ["RGKind", "PARTS", "body_labels", "auto_levels", "is_power_of_two"]

PARTS = ("disentangler", "decimator")


def is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def auto_levels(L: int, K: int) -> int:
    """H = log2(L/K) + 1 (requires L/K to be a power of two)."""
    if K <= 0 or L % K or not is_power_of_two(L // K):
        raise ValueError(f"L/K must be a power of two, got L={L}, K={K}")
    return (L // K).bit_length()


def body_labels(levels: int) -> list[tuple[str, str]]:
    """(part, label) of every body instance in application order."""
    return [(part, f"level{h}.{part}") for h in range(levels) for part in PARTS]


@register_layer
class RGKind(LayerKind):
    """``rg(kernel=4, levels=auto) { disentangler { ... } decimator { ... } }``."""

    name = "rg"
    description = "RG-Flow: patch bijectors on the dilated 2^h-lattices (disentangler + decimator per level)"
    spatial = True
    bodies = PARTS

    class Args(ArgsModel):
        kernel: StrictInt = 4
        levels: Union[Literal["auto"], StrictInt] = "auto"

    @classmethod
    def resolve_levels(cls, args, shape, ctx) -> int:
        """Check the arguments against ``shape`` (located errors) and return the level count."""
        if len(shape) != 3:
            ctx.fail(f"needs an image input (C, H, W), got shape {tuple(shape)}")
        C, Hh, W = shape
        if Hh != W:
            ctx.fail(f"needs a square image, got height {Hh} and width {W}")
        K = args.kernel
        if K < 2 or K % 2:
            ctx.fail(f"kernel must be even and at least 2, got {K}", arg="kernel")
        if K > W or W % K:
            ctx.fail(f"kernel {K} does not divide the image side {W}", arg="kernel")
        if not is_power_of_two(W // K):
            ctx.fail(f"needs L/K to be a power of two, got L={W}, K={K} (L/K = {W // K})", arg="kernel")
        H = auto_levels(W, K)
        if args.levels == "auto":
            return H
        if not 1 <= args.levels <= H:
            ctx.fail(
                f"levels must be between 1 and log2(L/K)+1 = {H} for L={W}, K={K}, got {args.levels}",
                arg="levels",
            )
        return args.levels

    @classmethod
    def infer_shape(cls, args, shape, ctx):
        cls.resolve_levels(args, shape, ctx)
        return tuple(shape)

    @classmethod
    def body_instances(cls, args, shape, ctx):
        levels = cls.resolve_levels(args, shape, ctx)
        C, K = shape[0], args.kernel
        return [BodyInstance(part, label, (C, K, K)) for part, label in body_labels(levels)]

    @classmethod
    def levels_for(cls, args, shape) -> int:
        """The level count without a check context (the args are assumed checked)."""
        return auto_levels(shape[-1], args.kernel) if args.levels == "auto" else int(args.levels)
