"""The runtime contract of a prior (base distribution) module.

    log_prob(z) -> (B,)                       log-density of latents z of shape (B, *shape), nats
    sample(n, temperature, device, dtype)     n latents; temperature T scales the spread
    noise                                     the standard noise ``from_noise`` takes, by name:
                                              "normal" N(0, 1) and/or "uniform" U[0, 1), each (B, *shape)
    from_noise(noise, temperature) -> z       the sampler as a deterministic map of that noise

``from_noise`` is what ``sample`` computes after drawing its noise, so exporting it (``prior.onnx``)
lets onnxruntime and numpy alone draw from the trained prior; a prior without it samples in
PyTorch only.

Conditional priors (``conditional=true``; PROTOCOL B): a prior with ``uses_context = True`` takes
the flow's :class:`~flowdsl.runtime.context.ContextValue` as a last argument everywhere:
``log_prob(z, context)``, ``sample(n, temperature, device, dtype, context)`` and
``from_noise(noise, temperature, context)``. Its location and log-scale come from
:class:`ConditionalParams`: per-class tables for labels, a zero-initialised ``Linear(E → 2·numel)``
of the (average-pooled) embedding for vectors and images; both start at the unconditional default.

Declared protocol (defaults here): a prior whose density follows the training schedule (the
spike-and-slab's annealed spike) sets ``anneal`` to the step at which its schedule ends and
implements ``set_step(step)``; the training loop calls ``set_step`` before every step and picks
best.pt only among evaluations from step ``anneal`` on.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Union

import torch
from torch import Tensor, nn

__all__ = ["Prior", "ConditionalParams"]


class Prior(nn.Module):
    """Base class of the prior modules (see the module docstring)."""

    #: the training step at which the prior's schedule ends (0: the density does not change)
    anneal: int = 0

    #: whether log_prob / sample / from_noise take the flow's context (conditional priors)
    uses_context: bool = False

    #: the standard noise :meth:`from_noise` transforms ("normal": N(0, 1), "uniform": U[0, 1))
    noise: ClassVar[tuple[str, ...]] = ()

    def set_step(self, step: int) -> None:
        """Follow the training schedule at ``step`` (default: nothing to follow)."""

    def from_noise(self, noise: dict[str, Tensor], temperature: Union[float, Tensor] = 1.0) -> Tensor:
        """Latents (B, *shape) from standard noise ``noise[name]`` (B, *shape) for each name in
        :attr:`noise`; ``temperature`` a number or a tensor broadcasting against z."""
        raise NotImplementedError(f"{type(self).__name__} has no from_noise (it samples in PyTorch only)")


class ConditionalParams(nn.Module):
    """Context-dependent (location, log-scale) of a conditional prior, each (B, *shape).

        label           loc = A[k], log_scale = base + S[k]       A, S: (K, *shape) tables, zero-initialised
        vector, image   [loc, log_scale − base] = W·e + b         Linear(E → 2·numel), zero-initialised,
                                                                  e = the (B, E) embedding (images pooled)

    ``base`` is the log-scale of the unconditional default (0 for a unit Gaussian, log b for a
    Laplace of scale b), so a new conditional prior equals it. Parameter count =
    ``flowdsl.compiler.context.conditional_prior_param_count``.
    """

    def __init__(self, shape: tuple[int, ...], context: Any, base_log_scale: float = 0.0) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        self.numel = math.prod(self.shape)
        self.kind = context.kind
        self.base_log_scale = float(base_log_scale)
        if self.kind == "label":
            k = int(context.classes)
            self.loc_table = nn.Parameter(torch.zeros(k, *self.shape))
            self.log_scale_table = nn.Parameter(torch.zeros(k, *self.shape))
        else:
            self.proj = nn.Linear(int(context.width), 2 * self.numel)
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, context: Any) -> tuple[Tensor, Tensor]:
        """(loc, log_scale), each (B, *shape), for a ContextValue of batch B."""
        if self.kind == "label":
            labels = context.raw
            loc = self.loc_table.index_select(0, labels)
            log_scale = self.log_scale_table.index_select(0, labels)
        else:
            from flowdsl.runtime.context import context_vector

            h = self.proj(context_vector(context))
            loc = h[:, : self.numel].reshape(-1, *self.shape)
            log_scale = h[:, self.numel :].reshape(-1, *self.shape)
        if self.base_log_scale != 0.0:
            log_scale = log_scale + self.base_log_scale
        return loc, log_scale
