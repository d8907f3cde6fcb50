"""``conv(kind=emerging|periodic, kernel=k)``: invertible k×k convolutions, language side.

Shapes: (C, H, W) -> unchanged (images only). Parameters: ``emerging`` two masked one-sided
convolutions of ((k+1)/2)² taps (2·C²·((k+1)/2)²), their log-diagonals (2·C) and a bias (C);
``periodic`` one C×C×k×k kernel.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer
from flowdsl.wording import plural

__all__ = ["ConvKind"]


@register_layer
class ConvKind(LayerKind):
    name = "conv"
    description = (
        "invertible k×k convolution: emerging (two masked AR convs) or periodic (circular, Fourier-invertible)"
    )
    spatial = True
    constant_logdet = True

    class Args(ArgsModel):
        kind: Literal["emerging", "periodic"] = "emerging"
        kernel: int = Field(3, ge=1)

    @classmethod
    def infer_shape(cls, args, shape, ctx):
        shape = tuple(shape)
        if len(shape) != 3:
            ctx.fail(
                f"conv(kind={args.kind}) needs an image input (C, H, W); this input is a vector of "
                f"{plural(shape[0], 'entry')}"
            )
        c, h, w = shape
        k = args.kernel
        if k < 1:
            ctx.fail(f"conv kernel must be a positive integer, got {k}", arg="kernel")
        if args.kind == "emerging" and k % 2 == 0:
            ctx.fail(
                f"conv(kind=emerging) needs an odd kernel (its two masked halves share the centre tap), "
                f"got {k}; use {k - 1} or {k + 1} — or kind=periodic, which takes even kernels",
                arg="kernel",
            )
        if args.kind == "periodic" and (k > h or k > w):
            # a circular kernel wider than the image would wrap onto itself (aliased taps)
            side, size = ("height", h) if k > h else ("width", w)
            ctx.fail(
                f"conv(kind=periodic) kernel {k} does not fit in the image: {side} is {size} "
                f"(input {c}×{h}×{w}); a periodic kernel must be at most {min(h, w)}",
                arg="kernel",
            )
        reach = (k + 1) // 2  # each masked AR conv is a one-sided ((k+1)/2)² conv
        if args.kind == "emerging" and (reach > h or reach > w):
            side, size = ("height", h) if reach > h else ("width", w)
            ctx.fail(
                f"conv(kind=emerging) kernel {k} does not fit in the image: its masked halves reach "
                f"{reach} pixels but the {side} is {size} (input {c}×{h}×{w}); use a kernel of at most "
                f"{2 * min(h, w) - 1}",
                arg="kernel",
            )
        return shape

    @classmethod
    def param_count(cls, args, shape) -> int:
        c, k = shape[0], args.kernel
        if args.kind == "emerging":
            half = (k + 1) // 2
            return 2 * c * c * half * half + 3 * c
        return c * c * k * k
