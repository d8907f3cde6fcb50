"""``coupling(kind=affine|additive|spline, hidden, net=conv|resnet|mlp, depth, mask=channel|checkerboard,
bins, bound, context)``: RealNVP/Glow/neural-spline coupling, language side.

``context`` (default: whether the file declares a context; resolved to a bool by the compiler):
the conditioner also sees the flow's context, concatenated to its input as E = CONTEXT_EMBED
features per position (image layers with conv/resnet nets), E features (vector layers) or E·h·w
(an mlp on an image layer); see :mod:`flowdsl.compiler.context`. An image context of (Hc, Wc) is
resized to the layer's (h, w) (inside an ``rg`` body: to the rg's image, then cut into its patches),
so one of them must be an integer multiple of the other on each axis.

``bins`` (≥ 2, default 8) and ``bound`` (> 0, default 3.0) belong to ``kind=spline`` only (a
monotonic rational-quadratic spline on [−bound, bound] with identity tails, Durkan et al. 2019);
written on another kind they are rejected at their location.

Shapes: (C, H, W) or (D,) -> unchanged. Parameters: the conditioner nets (one for a channel mask,
two for a checkerboard), each mapping n_in to n_out = mult·(updated part) with mult = 2 for
affine (shift and scale), 1 for additive and 3K − 1 for a spline of K bins (K widths, K heights
and K − 1 interior derivatives; the boundary derivatives are 1, matching the identity tails):

    conv    3×3 (n_in→h) + (depth−1)·1×1 (h→h) + 3×3 (h→n_out), with biases
    resnet  3×3 (n_in→h) + depth·(3×3 (h→h) + 1×1 (h→h)) + 3×3 (h→n_out), with biases
    mlp     Linear (n_in→h) + (depth−1)·Linear (h→h) + Linear (h→n_out), on flattened entries
"""

from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import Field

from flowdsl.compiler.context import conditioner_extra_inputs
from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer

__all__ = ["CouplingKind", "net_param_count", "SPLINE_DEFAULTS"]

SPLINE_DEFAULTS = {"bins": 8, "bound": 3.0}


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
    description = "affine, additive or rational-quadratic spline coupling with a conv, resnet or mlp conditioner"

    class Args(ArgsModel):
        kind: Literal["affine", "additive", "spline"] = "affine"
        hidden: int = Field(default=512, ge=1, le=2**31)
        net: Optional[Literal["conv", "resnet", "mlp"]] = None  # None: conv on images, mlp on vectors
        depth: int = Field(default=2, ge=1, le=64)
        mask: Literal["channel", "checkerboard"] = "channel"
        bins: Optional[int] = Field(default=None, ge=2, le=512)  # None: 8 for kind=spline
        bound: Optional[float] = Field(default=None, gt=0.0, le=1e6, allow_inf_nan=False)  # None: 3.0
        context: Optional[bool] = None  # None: whether the file declares a context (resolved by the compiler)

    @staticmethod
    def spline(args) -> tuple[int, float]:
        """(bins, bound) of a ``kind=spline`` coupling, defaults filled in."""
        bins = SPLINE_DEFAULTS["bins"] if args.bins is None else args.bins
        bound = SPLINE_DEFAULTS["bound"] if args.bound is None else float(args.bound)
        return bins, bound

    @classmethod
    def mult(cls, args) -> int:
        """Conditioner outputs per updated entry: 2 (affine), 1 (additive), 3K − 1 (spline)."""
        if args.kind == "spline":
            return 3 * cls.spline(args)[0] - 1
        return 2 if args.kind == "affine" else 1

    @classmethod
    def resolved_net(cls, args, shape) -> str:
        return args.net or ("mlp" if len(shape) == 1 else "conv")

    @classmethod
    def shown_args(cls, args, shape) -> dict:
        shown = {**args.model_dump(), "net": cls.resolved_net(args, shape)}
        if args.kind == "spline":
            shown["bins"], shown["bound"] = cls.spline(args)
        else:
            shown.pop("bins"), shown.pop("bound")
        shown["context"] = shown.pop("context")  # last, as written in the language reference
        return shown

    @classmethod
    def infer_shape(cls, args, shape, ctx):
        net = cls.resolved_net(args, shape)
        if args.kind != "spline":
            for name in ("bins", "bound"):
                if getattr(args, name) is not None:
                    ctx.fail(f"'{name}' belongs to kind=spline, not kind={args.kind}", arg=name)
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
        context = getattr(ctx, "context", None)
        if args.context and context is not None and context.kind == "image" and len(shape) == 3:
            size = getattr(ctx, "context_size", None)
            where = "this layer's" if size is None else "the enclosing layer's"
            h, w = size if size is not None else shape[1:]
            for axis, c, x in (("height", context.height, h), ("width", context.width, w)):
                if c % x and x % c:
                    ctx.fail(
                        f"the context image's {axis} {c} and {where} {axis} {x} are not integer multiples of "
                        f"each other, so the context cannot be resized to the layer (write context=false here, or "
                        f"choose a context size that divides the input's at every scale)",
                        arg="context",
                    )
        return shape

    @classmethod
    def activation_numel(cls, args, shape) -> int:
        nets = 1 if args.mask == "channel" else 2
        spatial = math.prod(shape[1:]) if len(shape) > 1 else 1
        if cls.resolved_net(args, shape) == "mlp":
            spatial = 1
        extra = cls.mult(args) if args.kind == "spline" else 0  # the spline's parameters per entry
        return math.prod(shape) * (3 + extra) + nets * args.hidden * spatial * (args.depth + 1)

    @classmethod
    def param_count(cls, args, shape) -> int:
        net = cls.resolved_net(args, shape)
        mult = cls.mult(args)
        c = shape[0]
        rest = math.prod(shape[1:]) if len(shape) > 1 else 1
        per = 1 if net != "mlp" else rest
        extra = conditioner_extra_inputs(tuple(shape), net) if args.context else 0
        if args.mask == "channel":
            c1 = c // 2
            return net_param_count(net, c1 * per + extra, (c - c1) * per * mult, args.hidden, args.depth)
        return 2 * net_param_count(net, c * per + extra, c * per * mult, args.hidden, args.depth)
