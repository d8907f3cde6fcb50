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

from flowdsl.runtime.bijector import Bijector
from flowdsl.runtime.layers.lowering import lowering

__all__ = ["Split"]


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


@lowering("split")
def lower_split(args, shape, bodies=None):
    return Split(shape)
