"""``prior spike_slab(spike=0.01, slab=1.0, weight=0.5, anneal=0)``: continuous spike-and-slab.

A factorised two-component Gaussian mixture over every latent entry (Li & Han, "gradually
sparsified" spike-and-slab, https://arxiv.org/abs/2209.09949):

    p(z_i) = (1 − w)·N(z_i; 0, σ₀(t)²) + w·N(z_i; 0, σ₁²)
    log p(z) = Σ_i logsumexp( log(1−w) + log N(z_i; 0, σ₀²),  log w + log N(z_i; 0, σ₁²) )

with σ₁ = ``slab``, w = ``weight`` (the slab's share) and the spike width σ₀(t) annealed over
the first ``anneal`` training steps t by **geometric interpolation** from the slab's width to
``spike``:

    r = min(t / anneal, 1)          (r = 1 when anneal = 0: no annealing)
    σ₀(t) = σ₁^(1−r) · spike^r      (log σ₀ moves linearly from log σ₁ to log spike)

so training starts from a dense N(0, σ₁²) and the prior becomes sparser step by step; the
geometric path shrinks the width by the same factor every step, which keeps the change of
log-density per step uniform instead of collapsing most of it into the last few steps.

The step t is the buffer ``anneal_step`` (int64, saved in checkpoints); the training loop calls
:meth:`SpikeSlabPrior.set_step` before every update. Sampling with temperature T draws the
component (slab with probability w), then z_i = T·σ·ε: with v ~ U[0, 1) and ε ~ N(0, 1) (the
noise "uniform" and "normal" of ``from_noise``), the slab is chosen where v < w.

Sparsity: an entry is "within the spike" when |z_i| is below the crossing point z* of the two
weighted components, (1−w)·N(z*; 0, σ₀²) = w·N(z*; 0, σ₁²), i.e.

    z*² = 2·(log((1−w)/w) + log(σ₁/σ₀)) / (σ₀⁻² − σ₁⁻²)      (0 when the right side is ≤ 0)

:meth:`SpikeSlabPrior.sparsity_report` gives that fraction for a batch of latents, and the mean
spike responsibility.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowdsl.runtime.priors.base import Prior
from flowdsl.runtime.priors.lowering import prior_lowering

__all__ = ["SpikeSlabPrior"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class SpikeSlabPrior(Prior):
    """The spike-and-slab base distribution over latents of ``shape`` (see the module docstring).

    Example:
        >>> p = SpikeSlabPrior((4,), spike=0.01, slab=1.0, weight=0.5, anneal=100)
        >>> float(p.spike_width())            # step 0: as wide as the slab
        1.0
        >>> p.set_step(50); round(float(p.spike_width()), 4)   # halfway, geometrically
        0.1
        >>> p.log_prob(torch.zeros(3, 4)).shape
        torch.Size([3])
    """

    noise = ("uniform", "normal")

    def __init__(
        self, shape: tuple[int, ...], spike: float = 0.01, slab: float = 1.0, weight: float = 0.5, anneal: int = 0
    ) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        self.anneal = int(anneal)
        self.spike = float(spike)
        self.slab = float(slab)
        self.weight = float(weight)
        self._log_spike = math.log(spike)
        self._log_slab = math.log(slab)
        self._log_w_slab = math.log(weight)
        self._log_w_spike = math.log1p(-weight)
        # the constants are Python floats (exact in any dtype); ``_ref`` only carries the
        # module's device and floating dtype; the step is state and goes into checkpoints
        self.register_buffer("_ref", torch.zeros(()), persistent=False)
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.long))

    # -- schedule ---------------------------------------------------------------------------
    def set_step(self, step: int | Tensor) -> None:
        """Set the training step t that drives the annealing (called by the training loop)."""
        self.anneal_step.fill_(int(step))

    def advance(self, n: int = 1) -> None:
        """t ← t + n."""
        self.anneal_step.add_(int(n))

    def anneal_fraction(self, dtype: torch.dtype | None = None) -> Tensor:
        """r = min(t / anneal, 1) as a 0-d tensor (1 when ``anneal`` = 0)."""
        dtype = dtype or self._ref.dtype
        if self.anneal <= 0:
            return torch.ones((), dtype=dtype, device=self._ref.device)
        return (self.anneal_step.to(dtype) / self.anneal).clamp(0.0, 1.0)

    def log_spike_width(self, dtype: torch.dtype | None = None) -> Tensor:
        r = self.anneal_fraction(dtype)
        return self._log_slab + r * (self._log_spike - self._log_slab)

    def spike_width(self, dtype: torch.dtype | None = None) -> Tensor:
        """σ₀(t), the current standard deviation of the spike (0-d tensor)."""
        return torch.exp(self.log_spike_width(dtype))

    # -- density ----------------------------------------------------------------------------
    def _component_logs(self, z: Tensor) -> tuple[Tensor, Tensor]:
        log_s0 = self.log_spike_width(z.dtype)
        z2 = z * z
        lp0 = (self._log_w_spike - _HALF_LOG_2PI) - 0.5 * z2 * torch.exp(-2.0 * log_s0) - log_s0
        lp1 = (self._log_w_slab - _HALF_LOG_2PI - self._log_slab) - (0.5 / (self.slab * self.slab)) * z2
        return lp0, lp1

    def log_prob_elementwise(self, z: Tensor) -> Tensor:
        """log p(z_i) for every entry, same shape as ``z``."""
        lp0, lp1 = self._component_logs(z)
        return torch.logsumexp(torch.stack([lp0, lp1], dim=0), dim=0)

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) in nats, shape (B,), for z of shape (B, *shape)."""
        lp = self.log_prob_elementwise(z)
        return lp.reshape(lp.shape[0], -1).sum(1)

    def spike_responsibility(self, z: Tensor) -> Tensor:
        """Posterior probability that each entry came from the spike, same shape as ``z``."""
        lp0, lp1 = self._component_logs(z)
        return torch.sigmoid(lp0 - lp1)

    # -- sampling ---------------------------------------------------------------------------
    def sample(
        self, n: int, temperature: float = 1.0, device=None, dtype=None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` draws of shape (n, *shape); every component's width is multiplied by ``temperature``."""
        device = device if device is not None else self._ref.device
        dtype = dtype if dtype is not None else self._ref.dtype
        size = (int(n), *self.shape)
        u = torch.rand(size, device=device, dtype=dtype, generator=generator)
        eps = torch.randn(size, device=device, dtype=dtype, generator=generator)
        return self.from_noise({"uniform": u, "normal": eps}, temperature)

    def from_noise(self, noise: dict[str, Tensor], temperature=1.0) -> Tensor:
        """z = T·σ·ε with σ the slab's width where v < w, else the spike's (v = ``noise["uniform"]``,
        ε = ``noise["normal"]``)."""
        u, eps = noise["uniform"], noise["normal"]
        s0 = self.spike_width(eps.dtype).to(device=eps.device)
        slab = u < self.weight
        return temperature * torch.where(slab, torch.full_like(eps, self.slab), s0) * eps

    # -- sparsity ---------------------------------------------------------------------------
    def threshold(self) -> Tensor:
        """The crossing point z* ≥ 0 of the weighted components (``inf`` when the spike wins everywhere)."""
        log_s0 = self.log_spike_width(torch.float64)
        inv0 = torch.exp(-2.0 * log_s0)
        inv1 = 1.0 / (self.slab * self.slab)
        num = 2.0 * ((self._log_w_spike - self._log_w_slab + self._log_slab) - log_s0)
        den = inv0 - inv1
        same = den <= 1e-12 * inv1
        safe = torch.where(same, torch.ones_like(den), den)
        z2 = torch.where(num > 0, num / safe, torch.zeros_like(num))
        spike_wins = torch.where(num > 0, torch.full_like(num, math.inf), torch.zeros_like(num))
        return torch.where(same, spike_wins, torch.sqrt(z2)).to(self._ref.dtype)

    @torch.no_grad()
    def sparsity(self, z: Tensor) -> float:
        """Fraction of entries of ``z`` within the spike (|z_i| < z*)."""
        return float((z.abs() < self.threshold().to(z.dtype)).to(torch.float64).mean())

    @torch.no_grad()
    def sparsity_report(self, z: Tensor) -> dict[str, float]:
        """Sparsity of a batch of latents ``z`` (B, *shape): fractions, threshold and schedule state."""
        return {
            "fraction_in_spike": self.sparsity(z),
            "mean_spike_responsibility": float(self.spike_responsibility(z).to(torch.float64).mean()),
            "threshold": float(self.threshold()),
            "spike_width": float(self.spike_width()),
            "slab_width": self.slab,
            "weight": self.weight,
            "step": int(self.anneal_step),
            "anneal": self.anneal,
        }

    def extra_repr(self) -> str:
        return (
            f"shape={self.shape}, spike={self.spike:g}, slab={self.slab:g}, weight={self.weight:g}, "
            f"anneal={self.anneal}"
        )


@prior_lowering("spike_slab")
def lower_spike_slab(args, shape):
    return SpikeSlabPrior(shape, spike=args.spike, slab=args.slab, weight=args.weight, anneal=args.anneal)
