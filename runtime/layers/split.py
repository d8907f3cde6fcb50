"""``split``: multi-scale factor-out (Glow). Half of the channels leave the chain as latents.

Shapes: x (B, C, H, W) -> kept (B, C − ⌊C/2⌋, H, W) and latent (B, ⌊C/2⌋, H, W);
vectors (B, D) -> kept (B, D − ⌊D/2⌋) and latent (B, ⌊D/2⌋).

    split     kept = x[:, :C−⌊C/2⌋],  latent = x[:, C−⌊C/2⌋:]
    merge     x = concat(kept, latent)
    log-det   0
The latents keep their place in ``z``: the compiled model reassembles every latent into one
tensor of the input's shape (see ``flowdsl.runtime.model``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer
from flowdsl.runtime.bijector import Bijector

__all__ = ["Split", "SplitKind"]


class Split(Bijector):
    factor_out = True

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.keep = shape[0] - shape[0] // 2

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, : self.keep], x[:, self.keep :]

    def merge(self, kept: Tensor, latent: Tensor) -> Tensor:
        return torch.cat([kept, latent], dim=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - the model calls split()
        raise TypeError("split is applied by the model through split()/merge()")

    def inverse(self, y: Tensor) -> Tensor:  # pragma: no cover
        raise TypeError("split is applied by the model through split()/merge()")


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

    @classmethod
    def build(cls, args, shape, bodies=None):
        return Split(shape)
