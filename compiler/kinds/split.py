"""``split``: factor out half of the channels as latents of this scale, language side.

Shapes: (C, ...) -> kept (C − ⌊C/2⌋, ...) and latent (⌊C/2⌋, ...). No parameters; log-det 0.
"""

from __future__ import annotations

from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer

__all__ = ["SplitKind"]


@register_layer
class SplitKind(LayerKind):
    name = "split"
    description = "factor out half of the channels as latents of this scale"
    factor_out = True
    moves_positions = True
    constant_logdet = True

    class Args(ArgsModel):
        pass

    @classmethod
    def infer_shape(cls, args, shape, ctx):
        if shape[0] < 2:
            if len(shape) == 1:  # squeeze is rejected on vectors: do not suggest it
                ctx.fail(f"cannot split a vector with 1 entry {tuple(shape)}; remove this split")
            ctx.fail(f"cannot split a tensor with 1 channel {tuple(shape)}; squeeze first or remove this split")
        return (shape[0] - shape[0] // 2, *shape[1:])

    @classmethod
    def latent_shape(cls, args, shape, ctx):
        return (shape[0] // 2, *shape[1:])
