"""``prior gmm(components=K, learned=true)``: a diagonal Gaussian mixture over the whole latent.

With D = numel(shape), component means μ_k, log-scales log σ_k (each of the latent's shape) and
logits a_k (k = 1…K, weights π = softmax(a)):

    log p(z) = logsumexp_k [ log π_k + Σ_i ( −½((z_i − μ_ki)/σ_ki)² − log σ_ki − ½ log 2π ) ]

computed with ``logsumexp`` over the K per-component log-densities (stable far from every
component: no density is exponentiated before the maximum is taken out).

Initialisation (also the fixed prior of ``learned=false``, deterministic): the means are drawn
from N(0, 1) with a ``torch.Generator`` seeded 0 and centred across components (so the mixture's
mean is 0 and ``components=1`` is the standard normal), log-scales 0 and equal weights. With
``learned=true`` all three are parameters starting there (2·K·D + K); otherwise buffers.

Sampling with temperature T (``from_noise`` with noise "uniform" and "normal"): the component is
chosen from the FIRST entry v of each example's uniform noise by the cumulative weights,
k = #{j < K−1 : v ≥ π_1 + … + π_{j+1}} (comparisons and sums: no multinomial, ONNX exportable),
then z = μ_k + T·σ_k·ε. T scales the spread within each component; the weights and means stay,
so T → 0 gives the component means. The other entries of the uniform noise are not used.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from flowdsl.runtime.priors.base import Prior
from flowdsl.runtime.priors.lowering import prior_lowering

__all__ = ["GMMPrior", "gmm_init"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gmm_init(components: int, shape: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """The deterministic start (means (K, *shape), log-scales (K, *shape), logits (K,)), float32."""
    gen = torch.Generator().manual_seed(0)
    means = torch.randn((components, *shape), generator=gen, dtype=torch.float64)
    means = (means - means.mean(0, keepdim=True)).to(torch.float32)
    return means, torch.zeros((components, *shape)), torch.zeros(components)


class GMMPrior(Prior):
    """K-component diagonal Gaussian mixture over latents of ``shape`` (see the module docstring).

    Example:
        >>> p = GMMPrior((3,), components=2)
        >>> p.log_prob(torch.zeros(5, 3)).shape, p.sample(4).shape
        (torch.Size([5]), torch.Size([4, 3]))
    """

    noise = ("uniform", "normal")

    def __init__(self, shape: tuple[int, ...], components: int = 4, learned: bool = True) -> None:
        super().__init__()
        if components < 1:
            raise ValueError(f"gmm needs at least one component, got {components}")
        self.shape = tuple(int(d) for d in shape)
        self.components = int(components)
        means, log_scales, logits = gmm_init(self.components, self.shape)
        if learned:
            self.means = nn.Parameter(means)
            self.log_scales = nn.Parameter(log_scales)
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("means", means)
            self.register_buffer("log_scales", log_scales)
            self.register_buffer("logits", logits)

    def log_weights(self) -> Tensor:
        """log π (K,)."""
        return torch.log_softmax(self.logits, dim=0)

    def component_log_prob(self, z: Tensor) -> Tensor:
        """log π_k + log N(z; μ_k, diag σ_k²) for every example and component, (B, K)."""
        b = z.shape[0]
        zf = z.reshape(b, 1, -1)
        mu = self.means.to(z.dtype).reshape(self.components, -1)
        ls = self.log_scales.to(z.dtype).reshape(self.components, -1)
        u = (zf - mu) * torch.exp(-ls)  # (B, K, D)
        d = mu.shape[1]
        comp = -0.5 * (u * u).sum(2) - ls.sum(1) - d * _HALF_LOG_2PI
        return comp + self.log_weights().to(z.dtype)

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) in nats, (B,), for z of shape (B, *shape)."""
        return torch.logsumexp(self.component_log_prob(z), dim=1)

    def responsibilities(self, z: Tensor) -> Tensor:
        """Posterior component probabilities p(k | z), (B, K)."""
        return torch.softmax(self.component_log_prob(z), dim=1)

    def sample(self, n: int, temperature: float = 1.0, device=None, dtype=None) -> Tensor:
        dtype = dtype or self.means.dtype
        device = device or self.means.device
        size = (int(n), *self.shape)
        v = torch.rand(size, device=device, dtype=dtype)
        eps = torch.randn(size, device=device, dtype=dtype)
        return self.from_noise({"uniform": v, "normal": eps}, temperature)

    def choose(self, v: Tensor) -> Tensor:
        """One-hot component choice (B, K) from uniforms v (B,) by the cumulative weights:
        g_j = [v ≥ π_1 + … + π_(j+1)] for j < K−1 (non-increasing in j), and component k is chosen
        where g_(k−1) = 1 (true for k = 0) and g_k = 0 (true for k = K−1)."""
        v = v.reshape(-1, 1)
        if self.components == 1:
            return torch.ones_like(v)
        cum = torch.cumsum(torch.softmax(self.logits.to(v.dtype), dim=0), dim=0)
        g = (v >= cum[:-1]).to(v.dtype)  # (B, K−1)
        return F.pad(g, (1, 0), value=1.0) * F.pad(1.0 - g, (0, 1), value=1.0)

    def from_noise(self, noise: dict[str, Tensor], temperature=1.0) -> Tensor:
        """z = μ_k + T·σ_k·ε, k chosen by the first entry of each example's ``noise["uniform"]``."""
        v, eps = noise["uniform"], noise["normal"]
        b = eps.shape[0]
        onehot = self.choose(v.reshape(b, -1)[:, 0])  # (B, K)
        mu = onehot @ self.means.to(eps.dtype).reshape(self.components, -1)
        sigma = onehot @ torch.exp(self.log_scales.to(eps.dtype)).reshape(self.components, -1)
        return mu.reshape(eps.shape) + temperature * sigma.reshape(eps.shape) * eps

    def extra_repr(self) -> str:
        return f"shape={self.shape}, components={self.components}, learned={isinstance(self.means, nn.Parameter)}"


@prior_lowering("gmm")
def lower_gmm(args, shape):
    return GMMPrior(shape, args.components, args.learned)
