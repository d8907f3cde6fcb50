"""``permute(kind=reverse|shuffle, seed=0)``: a fixed permutation of the channels (vector entries).

Shapes: x (B, C, H, W) or (B, D) -> same shape.

    forward   y[:, c] = x[:, π(c)]
    inverse   x[:, c] = y[:, π⁻¹(c)]
    log-det   0
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowdsl.runtime.bijector import Bijector
from flowdsl.runtime.layers.lowering import lowering

__all__ = ["Permute"]


class Permute(Bijector):
    def __init__(self, shape: tuple[int, ...], kind: str = "reverse", seed: int = 0) -> None:
        super().__init__()
        c = shape[0]
        if kind == "reverse":
            perm = torch.arange(c - 1, -1, -1)
        else:
            gen = torch.Generator().manual_seed(seed)
            perm = torch.randperm(c, generator=gen, device="cpu")
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.index_select(1, self.perm), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y.index_select(1, self.inv_perm)

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y.index_select(1, self.inv_perm), y.new_zeros(y.shape[0])


@lowering("permute")
def lower_permute(args, shape, bodies=None):
    return Permute(shape, args.kind, args.seed)
