"""``coupling(kind=affine|additive, hidden, net=conv|resnet|mlp, depth, mask=channel|checkerboard)``:
RealNVP/Glow coupling, language side.

Shapes: (C, H, W) or (D,) -> unchanged. Parameters: the conditioner nets (one for a channel mask,
two for a checkerboard), each mapping n_in to n_out = mult·(updated part) with mult = 2 for
affine (shift and scale) and 1 for additive:

    conv    3×3 (n_in→h) + (depth−1)·1×1 (h→h) + 3×3 (h→n_out), with biases
    resnet  3×3 (n_in→h) + depth·(3×3 (h→h) + 1×1 (h→h)) + 3×3 (h→n_out), with biases
    mlp     Linear (n_in→h) + (depth−1)·Linear (h→h) + Linear (h→n_out), on flattened entries
"""

from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import Field

from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer

__all__ = ["CouplingKind", "net_param_count"]


def _dense(n_in: int, n_out: int, taps: int = 1) -> int:
    return n_in * n_out * taps + n_out


def net_param_count(net: str, n_in: int, n_out: int, hidden: int, depth: int) -> int:
    """Parameters of one conditioner net (see the module docstring)."""
    if net == "conv":
        return _dense(n_in, hidden, 9) + (depth - 1) * _dense(hidden, hidden) + _dense(hidden, n_out, 9)
    if net == "resnet":
        block = _dense(hidden, hidden, 9) + _dense(hidden, hidden)
        return _dense(n_in, hidden, 9) + depth * block + _dense(hidden, n_out, 9)
    return _dense(n_in, hidden) + (depth - 1) * _dense(hidden, hidden) + _dense(hidden, n_out)


@register_layer
class CouplingKind(LayerKind):
    name = "coupling"
    description = "affine or additive coupling with a conv, resnet or mlp conditioner"

    class Args(ArgsModel):
        kind: Literal["affine", "additive"] = "affine"
        hidden: int = Field(default=512, ge=1, le=2**31)
        net: Optional[Literal["conv", "resnet", "mlp"]] = None  # None: conv on images, mlp on vectors
        depth: int = Field(default=2, ge=1, le=64)
        mask: Literal["channel", "checkerboard"] = "channel"

    @classmethod
    def resolved_net(cls, args, shape) -> str:
        return args.net or ("mlp" if len(shape) == 1 else "conv")

    @classmethod
    def shown_args(cls, args, shape) -> dict:
        return {**args.model_dump(), "net": cls.resolved_net(args, shape)}

    @classmethod
    def infer_shape(cls, args, shape, ctx):
        net = cls.resolved_net(args, shape)
        if len(shape) == 1 and net != "mlp":
            ctx.fail(f"net={net} needs image data; use net=mlp on vectors", arg="net")
        if args.mask == "channel" and shape[0] < 2:
            if len(shape) == 1:  # a vector: neither squeeze nor a checkerboard mask can help
                ctx.fail(
                    f"a coupling needs at least 2 entries to split, got {shape[0]}; "
                    "a vector of 1 entry cannot be coupled (remove this coupling)",
                    arg="mask",
                )
            ctx.fail(
                f"a channel coupling needs at least 2 channels to split, got {shape[0]} "
                "(use mask=checkerboard or squeeze first)",
                arg="mask",
            )
        if args.mask == "checkerboard" and math.prod(shape[1:] if len(shape) > 1 else shape) < 2:
            ctx.fail("a checkerboard coupling needs at least 2 positions", arg="mask")
        return shape

    @classmethod
    def activation_numel(cls, args, shape) -> int:
        nets = 1 if args.mask == "channel" else 2
        spatial = math.prod(shape[1:]) if len(shape) > 1 else 1
        if cls.resolved_net(args, shape) == "mlp":
            spatial = 1
        return math.prod(shape) * 3 + nets * args.hidden * spatial * (args.depth + 1)

    @classmethod
    def param_count(cls, args, shape) -> int:
        net = cls.resolved_net(args, shape)
        mult = 2 if args.kind == "affine" else 1
        c = shape[0]
        rest = math.prod(shape[1:]) if len(shape) > 1 else 1
        per = 1 if net != "mlp" else rest
        if args.mask == "channel":
            c1 = c // 2
            return net_param_count(net, c1 * per, (c - c1) * per * mult, args.hidden, args.depth)
        return 2 * net_param_count(net, c * per, c * per * mult, args.hidden, args.depth)
