"""``prior laplace(scale=1.0, learned=false)``: factorised Laplace base distribution (RG-Flow's sparse prior).

    log p(z) = Σ_i [ −|z_i − μ_i| / b_i − log(2 b_i) ]
μ = 0 and b = ``scale`` unless ``learned=true`` (then per-dimension μ and log b are parameters,
starting at 0 and log(scale)). (RG-Flow's b = T/√2 gives variance T²: write scale=0.7071 for that.)
Sampling by inverse CDF with temperature T: z = μ − T·b·sign(u)·log(1 − 2|u|), u = v − ½ for
v ~ U[0, 1) (``from_noise`` with noise "uniform"; u is kept 1e-7 inside (−½, ½)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowdsl.runtime.priors.base import Prior
from flowdsl.runtime.priors.lowering import prior_lowering

__all__ = ["LaplacePrior"]


class LaplacePrior(Prior):
    noise = ("uniform",)

    def __init__(self, shape: tuple[int, ...], scale: float = 1.0, learned: bool = False) -> None:
        super().__init__()
        self.shape = tuple(shape)
        loc = torch.zeros(shape)
        log_b = torch.full(shape, math.log(scale))
        if learned:
            self.loc = nn.Parameter(loc)
            self.log_b = nn.Parameter(log_b)
        else:
            self.register_buffer("loc", loc)
            self.register_buffer("log_b", log_b)

    def log_prob(self, z: Tensor) -> Tensor:
        lp = -torch.abs(z - self.loc) * torch.exp(-self.log_b) - self.log_b - math.log(2.0)
        return lp.reshape(-1, lp[0].numel()).sum(1)

    def sample(self, n: int, temperature: float = 1.0, device=None, dtype=None) -> Tensor:
        dtype = dtype or self.loc.dtype
        device = device or self.loc.device
        v = torch.rand((n, *self.shape), device=device, dtype=dtype)
        return self.from_noise({"uniform": v}, temperature)

    def from_noise(self, noise: dict[str, Tensor], temperature=1.0) -> Tensor:
        """The inverse CDF at v = ``noise["uniform"]`` (see the module docstring)."""
        v = noise["uniform"]
        u = (v - 0.5).clamp(-0.5 + 1e-7, 0.5 - 1e-7)
        b = temperature * torch.exp(self.log_b.to(v.dtype))
        return self.loc.to(v.dtype) - b * torch.sign(u) * torch.log1p(-2.0 * torch.abs(u))


@prior_lowering("laplace")
def lower_laplace(args, shape):
    return LaplacePrior(shape, args.scale, args.learned)
