"""The runtime contract of a prior (base distribution) module.

    log_prob(z) -> (B,)                       log-density of latents z of shape (B, *shape), nats
    sample(n, temperature, device, dtype)     n latents; temperature T scales the spread
    noise                                     the standard noise ``from_noise`` takes, by name:
                                              "normal" N(0, 1) and/or "uniform" U[0, 1), each (B, *shape)
    from_noise(noise, temperature) -> z       the sampler as a deterministic map of that noise

``from_noise`` is what ``sample`` computes after drawing its noise, so exporting it (``prior.onnx``)
lets onnxruntime and numpy alone draw from the trained prior; a prior without it samples in
PyTorch only.

Declared protocol (defaults here): a prior whose density follows the training schedule (the
spike-and-slab's annealed spike) sets ``anneal`` to the step at which its schedule ends and
implements ``set_step(step)``; the training loop calls ``set_step`` before every step and picks
best.pt only among evaluations from step ``anneal`` on.
"""

from __future__ import annotations

from typing import ClassVar, Union

from torch import Tensor, nn

__all__ = ["Prior"]


class Prior(nn.Module):
    """Base class of the prior modules (see the module docstring)."""

    #: the training step at which the prior's schedule ends (0: the density does not change)
    anneal: int = 0

    #: the standard noise :meth:`from_noise` transforms ("normal": N(0, 1), "uniform": U[0, 1))
    noise: ClassVar[tuple[str, ...]] = ()

    def set_step(self, step: int) -> None:
        """Follow the training schedule at ``step`` (default: nothing to follow)."""

    def from_noise(self, noise: dict[str, Tensor], temperature: Union[float, Tensor] = 1.0) -> Tensor:
        """Latents (B, *shape) from standard noise ``noise[name]`` (B, *shape) for each name in
        :attr:`noise`; ``temperature`` a number or a tensor broadcasting against z."""
        raise NotImplementedError(f"{type(self).__name__} has no from_noise (it samples in PyTorch only)")
