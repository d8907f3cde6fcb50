"""``conv1x1(param=lu|qr|plain)``: invertible 1×1 convolution (Glow), language side.

Shapes: (C, H, W) or (D,) -> unchanged; a C×C matrix per pixel. Parameters: ``lu`` stores L, U
(2·C², masked) and log|s| (C); ``qr`` stores Householder vectors and R (2·C²) and log|s| (C);
``plain`` the C² weight.
"""

from __future__ import annotations

from typing import Literal

from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer

__all__ = ["Conv1x1Kind"]

#: the largest channel count conv1x1 accepts (its C×C matrix is inverted once per fuse)
MAX_CHANNELS = 4096


@register_layer
class Conv1x1Kind(LayerKind):
    name = "conv1x1"
    description = "invertible 1x1 convolution (a C×C linear map per pixel; D×D on vectors)"
    constant_logdet = True

    class Args(ArgsModel):
        param: Literal["lu", "qr", "plain"] = "lu"

    @classmethod
    def infer_shape(cls, args, shape, ctx):
        if shape[0] > MAX_CHANNELS:
            ctx.fail(f"a {shape[0]}×{shape[0]} matrix is too large for conv1x1 (at most {MAX_CHANNELS} channels)")
        return shape

    @classmethod
    def param_count(cls, args, shape) -> int:
        c = shape[0]
        return c * c if args.param == "plain" else 2 * c * c + c
