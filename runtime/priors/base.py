"""The runtime contract of a prior (base distribution) module.

    log_prob(z) -> (B,)                       log-density of latents z of shape (B, *shape), nats
    sample(n, temperature, device, dtype)     n latents; temperature T scales the spread

Declared protocol (defaults here): a prior whose density follows the training schedule (the
spike-and-slab's annealed spike) sets ``anneal`` to the step at which its schedule ends and
implements ``set_step(step)``; the training loop calls ``set_step`` before every step and picks
best.pt only among evaluations from step ``anneal`` on.
"""

from __future__ import annotations

from torch import nn

__all__ = ["Prior"]


class Prior(nn.Module):
    """Base class of the prior modules (see the module docstring)."""

    #: the training step at which the prior's schedule ends (0: the density does not change)
    anneal: int = 0

    def set_step(self, step: int) -> None:
        """Follow the training schedule at ``step`` (default: nothing to follow)."""
