"""``squeeze(factor=f)``: space-to-depth, language side.

Shapes: (C, H, W) -> (C·f², H/f, W/f); f must divide H and W. No parameters; log-det 0.
"""

from __future__ import annotations

from pydantic import Field

from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer

__all__ = ["SqueezeKind"]


@register_layer
class SqueezeKind(LayerKind):
    name = "squeeze"
    description = "space-to-depth (C, H, W) -> (C·f², H/f, W/f)"
    spatial = True
    constant_logdet = True
    moves_positions = True

    class Args(ArgsModel):
        factor: int = Field(default=2, ge=1, le=4096)

    @classmethod
    def infer_shape(cls, args, shape, ctx):
        c, h, w = shape
        f = args.factor
        bad = [f"height {h}" if h % f else "", f"width {w}" if w % f else ""]
        bad = [b for b in bad if b]
        if bad:
            ctx.fail(f"factor {f} does not divide the {' and '.join(bad)} of the input {tuple(shape)}", arg="factor")
        return (c * f * f, h // f, w // f)
