"""``prior gaussian(learned=false)``: factorised normal base distribution over z of the input's shape.

    log p(z) = Σ_i [ −½((z_i − μ_i)/σ_i)² − log σ_i − ½ log 2π ]
μ = 0, σ = 1 unless ``learned=true`` (then per-dimension μ and log σ are parameters, starting at 0).
Sampling with temperature T draws z = μ + T·σ·ε, ε ~ N(0, 1) (``from_noise`` with noise "normal").

``conditional=true`` (:class:`ConditionalGaussianPrior`): μ and log σ depend on the flow's context
(``ConditionalParams``: per-class tables for labels, a zero-initialised Linear of the embedding
otherwise) instead of the constant ones; every method takes the ContextValue as a last argument.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowdsl.runtime.priors.base import ConditionalParams, Prior
from flowdsl.runtime.priors.lowering import prior_lowering

__all__ = ["GaussianPrior", "ConditionalGaussianPrior", "gaussian_log_prob"]


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_prob(z: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """Σ_i log N(z_i; μ_i, σ_i²) per example, (B,)."""
    u = (z - loc) * torch.exp(-log_scale)
    lp = -0.5 * u * u - log_scale - _HALF_LOG_2PI
    return lp.reshape(-1, lp[0].numel()).sum(1)


class GaussianPrior(Prior):
    noise = ("normal",)

    def __init__(self, shape: tuple[int, ...], learned: bool = False) -> None:
        super().__init__()
        self.shape = tuple(shape)
        if learned:
            self.loc = nn.Parameter(torch.zeros(shape))
            self.log_scale = nn.Parameter(torch.zeros(shape))
        else:
            self.register_buffer("loc", torch.zeros(shape))
            self.register_buffer("log_scale", torch.zeros(shape))

    def log_prob(self, z: Tensor) -> Tensor:
        u = (z - self.loc) * torch.exp(-self.log_scale)
        lp = -0.5 * u * u - self.log_scale - 0.5 * math.log(2 * math.pi)
        return lp.reshape(-1, lp[0].numel()).sum(1)

    def sample(self, n: int, temperature: float = 1.0, device=None, dtype=None) -> Tensor:
        dtype = dtype or self.loc.dtype
        device = device or self.loc.device
        eps = torch.randn((n, *self.shape), device=device, dtype=dtype)
        return self.from_noise({"normal": eps}, temperature)

    def from_noise(self, noise: dict[str, Tensor], temperature=1.0) -> Tensor:
        """z = μ + T·σ·ε for ε = ``noise["normal"]``."""
        eps = noise["normal"]
        return self.loc.to(eps.dtype) + temperature * torch.exp(self.log_scale.to(eps.dtype)) * eps


class ConditionalGaussianPrior(Prior):
    """``gaussian(conditional=true)``: N(μ(c), σ(c)²) per entry (see the module docstring)."""

    noise = ("normal",)
    uses_context = True

    def __init__(self, shape: tuple[int, ...], context) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.params = ConditionalParams(self.shape, context, 0.0)

    def log_prob(self, z: Tensor, context) -> Tensor:
        loc, log_scale = self.params(context)
        return gaussian_log_prob(z, loc.to(z.dtype), log_scale.to(z.dtype))

    def sample(self, n: int, temperature: float = 1.0, device=None, dtype=None, context=None) -> Tensor:
        ref = context.embedding
        eps = torch.randn((n, *self.shape), device=device or ref.device, dtype=dtype or ref.dtype)
        return self.from_noise({"normal": eps}, temperature, context)

    def from_noise(self, noise: dict[str, Tensor], temperature=1.0, context=None) -> Tensor:
        """z = μ(c) + T·σ(c)·ε for ε = ``noise["normal"]``."""
        eps = noise["normal"]
        loc, log_scale = self.params(context)
        return loc.to(eps.dtype) + temperature * torch.exp(log_scale.to(eps.dtype)) * eps


@prior_lowering("gaussian")
def lower_gaussian(args, shape, context=None):
    if getattr(args, "conditional", False):
        return ConditionalGaussianPrior(shape, context)
    return GaussianPrior(shape, args.learned)
