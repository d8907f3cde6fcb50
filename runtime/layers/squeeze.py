"""``squeeze(factor=f)``: space-to-depth, (C, H, W) -> (C·f², H/f, W/f).

forward   y[c·f² + a·f + b, i, j] = x[c, i·f + a, j·f + b]
inverse   the same index map read backwards
log-det   0 (a permutation of the entries)
"""

from __future__ import annotations

from torch import Tensor

from flowdsl.runtime.bijector import Bijector
from flowdsl.runtime.layers.lowering import lowering

__all__ = ["Squeeze"]


class Squeeze(Bijector):
    moves_positions = True

    def __init__(self, shape: tuple[int, ...], factor: int = 2) -> None:
        super().__init__()
        self.c, self.h, self.w = shape
        self.f = factor

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c, h, w, f = self.c, self.h, self.w, self.f
        y = x.reshape(-1, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4).reshape(-1, c * f * f, h // f, w // f)
        return y, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        c, h, w, f = self.c, self.h, self.w, self.f
        return y.reshape(-1, c, f, f, h // f, w // f).permute(0, 1, 4, 2, 5, 3).reshape(-1, c, h, w)

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.inverse(y), y.new_zeros(y.shape[0])


@lowering("squeeze")
def lower_squeeze(args, shape, bodies=None):
    return Squeeze(shape, args.factor)
