"""The FDRL sampler: particles follow the gradient flow of the entropy-regularised f-divergence.

One Euler–Maruyama step (DGflow, Ansari et al. 2021, arXiv 2012.00780, Eq. 5), with the estimator r frozen:

    x ← x − η·∇ₓ E(x) + ν·ξ,   ξ ~ N(0, I),   E(x) = f′(r(x))   [− φ·log p(y|x)]

η = ``step_size``, ν = ``noise``; the bracket is classifier guidance for class-conditional
generation (r(x|y) ∝ r(x)/p(y|x), so the energy gains −φ·log p(y|x) for the requested class y).

* The gradient is taken with ``torch.autograd.grad`` of Σᵢ E(xᵢ) w.r.t. the particles: the
  estimators have no batch coupling, so this is every particle's own gradient, in one pass.
* The estimator's (and classifier's) parameters are frozen (``requires_grad`` off) for the run
  and restored afterwards; no graph reaches the caller (the result is detached).
* No host synchronisation inside the loop: no ``.item()``, no data-dependent Python branches;
  the noise comes from a ``torch.Generator`` if one is given.

The sampler is a PyTorch-only loop: it needs ∇ₓ of a network at every step, and
``torch.autograd.grad`` inside a module is not exportable to ONNX. The
estimator r(x) alone exports (:mod:`flowdsl.runtime.objectives.fdrl.export`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowdsl.runtime.objectives.fdrl.losses import f_prime

__all__ = ["Guidance", "frozen", "energy", "energy_grad", "flow_step", "run_flow"]


@dataclass
class Guidance:
    """Classifier guidance: add −``weight``·log p(``labels``|x) to the energy.

    ``classifier(x)`` must return logits (B, classes); ``labels`` is (B,) long (one class per
    particle) or a single class for all.
    """

    classifier: nn.Module
    labels: Tensor
    weight: float = 0.1

    def log_p(self, x: Tensor) -> Tensor:
        logp = F.log_softmax(self.classifier(x), dim=-1)
        y = self.labels.to(device=x.device, dtype=torch.long).reshape(-1)
        if y.numel() == 1:
            y = y.expand(x.shape[0])
        return logp.gather(1, y.reshape(-1, 1)).squeeze(1)


@contextlib.contextmanager
def frozen(*modules: Optional[nn.Module]) -> Iterator[None]:
    """Turn ``requires_grad`` off for the modules' parameters; restore it afterwards."""
    saved = []
    for m in modules:
        if m is None:
            continue
        for p in m.parameters():
            saved.append((p, p.requires_grad))
            p.requires_grad_(False)
    try:
        yield
    finally:
        for p, rg in saved:
            p.requires_grad_(rg)


def energy(estimator: nn.Module, x: Tensor, divergence: str, loss: str, guidance: Optional[Guidance] = None) -> Tensor:
    """E(x) = f′(r(x)) − φ·log p(y|x), one value per particle (B,)."""
    e = f_prime(divergence, estimator(x), loss)
    if guidance is not None and guidance.weight != 0:
        e = e - guidance.weight * guidance.log_p(x)
    return e


def energy_grad(
    estimator: nn.Module, x: Tensor, divergence: str, loss: str, guidance: Optional[Guidance] = None
) -> Tensor:
    """∇ₓ E(x) for every particle (same shape as ``x``); parameters must be frozen by the caller."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(estimator, xg, divergence, loss, guidance).sum(), xg)
    return g


def flow_step(
    estimator: nn.Module,
    x: Tensor,
    step_size: float,
    noise: float,
    divergence: str,
    loss: str,
    guidance: Optional[Guidance] = None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """One step x − η∇ₓE(x) + ν·ξ (detached)."""
    g = energy_grad(estimator, x, divergence, loss, guidance)
    x = x.detach() - step_size * g
    if noise > 0:
        x = x + noise * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x


def run_flow(
    estimator: nn.Module,
    x0: Tensor,
    steps: int,
    step_size: float,
    noise: float,
    divergence: str,
    loss: str,  # the dynamics, as for flow_step
    guidance: Optional[Guidance] = None,
    generator: Optional[torch.Generator] = None,
    clamp: Optional[tuple[float, float]] = None,
    batch: int = 0,
) -> Tensor:
    """``steps`` flow steps from ``x0`` (B, *shape) with the estimator frozen; returns x_K detached.

    ``clamp`` (lo, hi) keeps the final particles in the data range (images on [−1, 1]);
    ``batch`` > 0 runs the particles in chunks of that size (memory), in order, with the same
    generator (the result then depends on the chunking, deterministically).
    """

    def chain(x: Tensor, g: Optional[Guidance]) -> Tensor:
        x = x.detach()
        for _ in range(int(steps)):
            x = flow_step(estimator, x, step_size, noise, divergence, loss, g, generator)
        return x

    was = estimator.training
    estimator.eval()
    try:
        with frozen(estimator, guidance.classifier if guidance is not None else None):
            if batch and x0.shape[0] > batch:
                outs = []
                for i in range(0, x0.shape[0], batch):
                    g = None
                    if guidance is not None and guidance.labels.numel() > 1:
                        g = Guidance(guidance.classifier, guidance.labels[i : i + batch], guidance.weight)
                    elif guidance is not None:
                        g = guidance
                    outs.append(chain(x0[i : i + batch], g))
                x = torch.cat(outs)
            else:
                x = chain(x0, guidance)
    finally:
        estimator.train(was)
    if clamp is not None:
        x = x.clamp(clamp[0], clamp[1])
    return x
