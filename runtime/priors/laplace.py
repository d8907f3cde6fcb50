"""``prior laplace(scale=1.0, learned=false)``: factorised Laplace base distribution (RG-Flow's sparse prior).

    log p(z) = Σ_i [ −|z_i − μ_i| / b_i − log(2 b_i) ]
μ = 0 and b = ``scale`` unless ``learned=true`` (then per-dimension μ and log b are parameters,
starting at 0 and log(scale)). (RG-Flow's b = T/√2 gives variance T²: write scale=0.7071 for that.)
Sampling by inverse CDF with temperature T: z = μ − T·b·sign(u)·log(1 − 2|u|), u = v − ½ for
v ~ U[0, 1) (``from_noise`` with noise "uniform"; u is kept 1e-7 inside (−½, ½)).

``conditional=true`` (:class:`ConditionalLaplacePrior`): μ and log b depend on the flow's context
(``ConditionalParams``, starting at μ = 0, b = ``scale``) instead of the constant ones; every
method takes the ContextValue as a last argument.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowdsl.runtime.priors.base import ConditionalParams, Prior
from flowdsl.runtime.priors.lowering import prior_lowering

__all__ = ["LaplacePrior", "ConditionalLaplacePrior"]


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


def _laplace_from_uniform(v: Tensor, loc: Tensor, log_b: Tensor, temperature) -> Tensor:
    u = (v - 0.5).clamp(-0.5 + 1e-7, 0.5 - 1e-7)
    b = temperature * torch.exp(log_b)
    return loc - b * torch.sign(u) * torch.log1p(-2.0 * torch.abs(u))


class ConditionalLaplacePrior(Prior):
    """``laplace(conditional=true)``: Laplace(μ(c), b(c)) per entry (see the module docstring)."""

    noise = ("uniform",)
    uses_context = True

    def __init__(self, shape: tuple[int, ...], context, scale: float = 1.0) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.params = ConditionalParams(self.shape, context, math.log(scale))

    def log_prob(self, z: Tensor, context) -> Tensor:
        loc, log_b = self.params(context)
        loc, log_b = loc.to(z.dtype), log_b.to(z.dtype)
        lp = -torch.abs(z - loc) * torch.exp(-log_b) - log_b - math.log(2.0)
        return lp.reshape(-1, lp[0].numel()).sum(1)

    def sample(self, n: int, temperature: float = 1.0, device=None, dtype=None, context=None) -> Tensor:
        ref = context.embedding
        v = torch.rand((n, *self.shape), device=device or ref.device, dtype=dtype or ref.dtype)
        return self.from_noise({"uniform": v}, temperature, context)

    def from_noise(self, noise: dict[str, Tensor], temperature=1.0, context=None) -> Tensor:
        """The inverse CDF at v = ``noise["uniform"]`` with μ(c), b(c)."""
        v = noise["uniform"]
        loc, log_b = self.params(context)
        return _laplace_from_uniform(v, loc.to(v.dtype), log_b.to(v.dtype), temperature)


@prior_lowering("laplace")
def lower_laplace(args, shape, context=None):
    if getattr(args, "conditional", False):
        return ConditionalLaplacePrior(shape, context, args.scale)
    return LaplacePrior(shape, args.scale, args.learned)
