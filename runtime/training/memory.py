"""Invertible-memory training: recompute each step's activations from its outputs in backward.

A normalizing flow is invertible, so the activations a step needs for its backward pass can be
rebuilt from the step's *output*: run the chain forward without autograd (keeping only the
latents it emits), then in backward walk the steps in reverse, and for each one

    x = step.inverse(y)                     (no autograd)
    y', logdet = step(x)                    (with autograd, this step only)
    ∂L/∂x, ∂L/∂θ_step = autograd(y', logdet; ∂L/∂y, ∂L/∂logdet)

so the memory kept between forward and backward is the latents (which are outputs anyway)
instead of every intermediate activation of every step; the peak is one step's activations.
The price is one inverse and one extra forward per step, and gradients that differ from
ordinary backprop by the round-trip error of the inverse (float32: ~1e-6 relative on a
well-conditioned flow). Parameters are inputs of the autograd function, so optimizers,
gradient clipping and DDP hooks see ordinary ``.grad`` values.

    wrapped = InvertibleMemory(model)         # shares model's parameters; no copy
    loss = -wrapped.log_prob(x).mean()
    loss.backward()

Limitations: the steps must be exact inverses of each other in the working precision (every
flowdsl layer is); data-dependent initialisation (actnorm) happens in the no-grad forward,
as in ordinary training.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["InvertibleMemory"]


class _RecomputeChain(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, model: nn.Module, n_params: int, x: Tensor, *params: Tensor):
        with torch.no_grad():
            h = x
            logdet = x.new_zeros(x.shape[0])
            latents: list[Tensor] = []
            for step in model.steps:
                if step.factor_out:
                    h, lat = step.split(h)
                    latents.append(lat.contiguous())
                else:
                    h, ld = step(h)
                    logdet = logdet + ld
            latents.append(h)
        ctx.model = model
        ctx.save_for_backward(*latents)
        return (*latents, logdet)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor):
        model = ctx.model
        latents = list(ctx.saved_tensors)
        g_lat = [torch.zeros_like(t) if g is None else g for g, t in zip(grads[:-1], latents)]
        g_ld = grads[-1]
        h, gh = latents[-1], g_lat[-1]
        if g_ld is None:
            g_ld = h.new_zeros(h.shape[0])
        params = [p for p in model.steps.parameters()]
        index = {id(p): i for i, p in enumerate(params)}
        p_grads: list[Tensor | None] = [None] * len(params)
        k = len(latents) - 2
        for step in reversed(model.steps):
            if step.factor_out:
                h = step.merge(h, latents[k])
                gh = step.merge(gh, g_lat[k])
                k -= 1
                continue
            with torch.no_grad():
                x = step.inverse(h)
            own = [p for p in step.parameters() if p.requires_grad]
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                y, ld = step(x)
                pairs = [(o, g) for o, g in ((y, gh), (ld, g_ld)) if o.requires_grad]
                outs = torch.autograd.grad([o for o, _ in pairs], (x, *own), [g for _, g in pairs], allow_unused=True)
            gh = outs[0] if outs[0] is not None else torch.zeros_like(x)
            for p, g in zip(own, outs[1:]):
                if g is not None:
                    i = index[id(p)]
                    p_grads[i] = g if p_grads[i] is None else p_grads[i] + g
            h = x.detach()
        return (None, None, gh, *p_grads)


class InvertibleMemory(nn.Module):
    """A compiled flow whose backward pass recomputes activations from outputs (see module doc).

    Same ``forward``/``log_prob`` as the wrapped model (``inverse`` and ``sample`` delegate).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        params = [p for p in self.model.steps.parameters()]
        if not torch.is_grad_enabled():
            return self.model(x)
        out = _RecomputeChain.apply(self.model, len(params), x, *params)
        latents, logdet = list(out[:-1]), out[-1]
        return self.model._assemble(latents), logdet

    def log_prob(self, x: Tensor) -> Tensor:
        z, logdet = self(x)
        return self.model.prior.log_prob(z) + logdet

    def inverse(self, z: Tensor) -> Tensor:
        return self.model.inverse(z)

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        return self.model.sample(n, temperature)
