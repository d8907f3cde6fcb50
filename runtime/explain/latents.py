"""The latents of an RG-Flow model: their levels, prior draws, and mixing across levels.

Everything here works on a compiled model (``flowdsl.compile``) through its public API
(``model(x)``, ``model.inverse(z)``, ``model.prior``, ``model.latent_scales()``). Images are in
the model's space (x on the [0, 1) scale for image data); z has the shape of x. A conditional
model takes its context as ``model_context=`` (what ``model(x, context=...)`` takes; a missing or
wrong one is a ``ContextError``); ``model_context`` because inpainting's ``context`` is a width.

    find_rg(model)                     the ``rg`` layers of a model
    latent_levels(model)               each latent's RG level
    sample_latents(model, n, T)        reproducible prior draws at temperature T
    randomise_parameters(model, std)   generic weights for an untrained model
    scale_mix(model, xa, xb, lam)      levels ≥ lam from A, the finer ones from B
    temperature_mix(model, n, lam)     levels ≥ lam drawn at T_high, the finer ones at T_low

The other RG-Flow explainability tools: :mod:`flowdsl.runtime.explain.receptive` (receptive fields),
:mod:`flowdsl.runtime.explain.inpaint` (inpainting), :mod:`flowdsl.runtime.bench.rg` (quick fits
and the inpainting benchmark) and :mod:`flowdsl.runtime.explain.plots` (pictures);
``flowdsl explain`` (:mod:`flowdsl.runtime.explain.cli`) puts them on the command line.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from flowdsl.runtime.layers.rg import RGFlow

__all__ = [
    "find_rg",
    "latent_levels",
    "dtype_device",
    "encode_model_context",
    "context_kw",
    "sample_latents",
    "randomise_parameters",
    "scale_mix",
    "temperature_mix",
]


def find_rg(model: nn.Module) -> list[RGFlow]:
    """The ``rg`` modules inside ``model`` (in module order)."""
    return [m for m in model.modules() if isinstance(m, RGFlow)]


def latent_levels(model: nn.Module) -> Tensor:
    """Long tensor of the input shape: each latent's RG level (``model.latent_scales()``)."""
    if hasattr(model, "latent_scales"):
        return model.latent_scales()
    rgs = find_rg(model)
    if len(rgs) != 1:
        raise ValueError("the model has no latent_scales() and not exactly one rg layer")
    return rgs[0].latent_levels()


def dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of the model's first floating-point parameter or buffer (else the defaults)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


def encode_model_context(model: nn.Module, model_context: Any, batch: int):
    """The model's encoded context (a ``ContextValue``) for ``batch`` examples, or None for an
    unconditional model; ``ContextError`` for a missing, superfluous or ill-shaped context."""
    if model_context is None and not hasattr(model, "encode_context"):
        return None  # a model seen through inverse/prior only (duck-typed): unconditional
    dtype, device = dtype_device(model)
    return model.encode_context(model_context, batch, device, dtype)


def context_kw(context: Any) -> dict:
    """``{"context": context}``, or ``{}`` for None (so unconditional duck-typed models, whose
    ``inverse``/``forward`` take no context, keep working)."""
    return {} if context is None else {"context": context}


def sample_latents(
    model: nn.Module, n: int, temperature: float = 1.0, seed: int | None = None, *, model_context: Any = None
) -> Tensor:
    """n draws of z from the model's prior at ``temperature`` (reproducible with ``seed``); a
    conditional prior draws given ``model_context``."""
    dtype, device = dtype_device(model)
    cv = encode_model_context(model, model_context, n)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if getattr(model.prior, "uses_context", False):
            return model.prior.sample(n, temperature=temperature, device=device, dtype=dtype, context=cv)
        return model.prior.sample(n, temperature=temperature, device=device, dtype=dtype)


@torch.no_grad()
def randomise_parameters(model: nn.Module, std: float = 0.1, seed: int = 0) -> nn.Module:
    """Add N(0, std²) noise to every parameter (in place; returns ``model``).

    A freshly compiled flow is the identity up to constant scales (the last layer of every
    coupling net starts at zero), so its receptive fields are single pixels. This gives an
    untrained model generic weights, so that the *structure* of the cones is visible.
    """
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p) * std)
    return model


# ------------------------------------------------------------------------------------------
# mixing
@torch.no_grad()
def scale_mix(model: nn.Module, xa: Tensor, xb: Tensor, lam: int, *, model_context: Any = None) -> Tensor:
    """Images whose latents of level ≥ ``lam`` come from ``xa`` and the finer ones from ``xb``.

    xa, xb: (B, C, H, W) (broadcast against each other). ``lam`` = 0 gives A back, ``lam`` =
    number of levels gives B back. A conditional model encodes and decodes given ``model_context``.
    """
    za, _ = model(xa, **context_kw(model_context))
    zb, _ = model(xb, **context_kw(model_context))
    coarse = (latent_levels(model) >= lam).to(za.device)
    z = torch.where(coarse, za, zb)
    return model.inverse(z, **context_kw(model_context))


@torch.no_grad()
def temperature_mix(
    model: nn.Module,
    n: int,
    lam: int = 1,
    t_high: float = 0.8,
    t_low: float = 0.2,
    seed: int = 0,
    *,
    model_context: Any = None,
) -> Tensor:
    """n samples with the latents of level ≥ ``lam`` drawn at ``t_high`` and the rest at ``t_low``.

    The same seed gives the same underlying draws for every ``lam`` (the prior noise is drawn at
    T = 1 and scaled per level), so a row of a grid varies only the split between the levels.
    """
    hi = sample_latents(model, n, t_high, seed, model_context=model_context)
    lo = sample_latents(model, n, t_low, seed, model_context=model_context)  # the same noise, scaled (T·ε)
    coarse = (latent_levels(model) >= lam).to(hi.device)
    return model.inverse(torch.where(coarse, hi, lo), **context_kw(model_context))
