"""Inpainting with an RG-Flow model: only the latents whose causal cone meets the hole change.

    touched_latents(model, mask)       the latents whose causal cone meets the mask
    inpaint(model, x, mask)            MAP (or Langevin) over the touched latents only, each step
                                       regenerating only the hole's causal cone (O(log L) patches)

For a fixed hole the touched latents grow as O(log L) with the image side L (against L² for
all latents); :func:`flowdsl.runtime.bench.rg.inpaint_benchmark` measures that and
:func:`flowdsl.runtime.explain.plots.plot_inpainting` draws a completion.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from flowdsl.errors import FlowDSLError
from flowdsl.runtime.explain.cone import only_rg_mixes_positions
from flowdsl.runtime.explain.latents import context_kw, encode_model_context, latent_levels, randomise_parameters

__all__ = ["touched_latents", "hole_visibility", "InpaintResult", "inpaint"]


def touched_latents(model: nn.Module, mask: Tensor, *, model_context: Any = None, batch: int = 1) -> Tensor:
    """Bool tensor of the input shape: the latents whose generation cone meets ``mask``.

    ``mask`` (H, W) or (C, H, W), True = missing pixel. When the model's only position-mixing
    layer is one ``rg`` (others act per position: actnorm, conv1x1, permute) the cone is exact
    and structural (:func:`~flowdsl.runtime.layers._rg_lattice.dependency_mask`). Otherwise it
    is probed: one vector-Jacobian product of ``model.inverse`` on a copy of the model with
    generic (randomised) weights, marking the latents with a non-zero derivative (a conditional
    model is probed given ``model_context``: one context, or ``batch`` of them; a latent counts if
    it is touched for any of them).
    """
    levels = latent_levels(model)
    C, H, W = levels.shape
    m = mask.to(torch.bool).cpu()
    if m.dim() == 2:
        m = m.unsqueeze(0).expand(C, H, W)
    rg = only_rg_mixes_positions(model)
    if rg is not None:
        return rg.dependency_mask(m)
    probe = randomise_parameters(copy.deepcopy(model).double().eval(), std=0.1, seed=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cv = encode_model_context(probe, model_context, batch)
        z = torch.randn(batch, C, H, W, dtype=torch.float64, requires_grad=True)
        w = torch.rand(batch, C, H, W, dtype=torch.float64) + 0.5
    with torch.enable_grad():
        x = probe.inverse(z, **context_kw(cv))
        (g,) = torch.autograd.grad((x * w * m.to(x)).sum(), z)
    return g.abs().amax(dim=0) > 0


def hole_visibility(x: Tensor, mask: Tensor) -> Tensor:
    """(N,): how visible a hole is in each image: RMS over the hole of x − (mean of the known pixels).

    x (N, C, H, W), mask (H, W) or (C, H, W) bool. 0 when the hole's content equals the fill
    (a flat region: erasing it changes nothing and a picture shows nothing); pictures pick the
    image with the largest value.
    """
    N, C, H, W = x.shape
    m = mask.to(torch.bool).to(x.device)
    m = m.unsqueeze(0).expand(C, H, W) if m.dim() == 2 else m
    known = (~m).to(x.dtype)
    fill = (x * known).sum(dim=(1, 2, 3)) / known.sum().clamp_min(1)
    d = (x - fill.view(N, 1, 1, 1)) * m.to(x.dtype)
    return (d.pow(2).sum(dim=(1, 2, 3)) / m.sum().clamp_min(1)).sqrt()


@dataclass
class InpaintResult:
    """What :func:`inpaint` returns.

    Attributes:
        x: (B, C, H, W) the completed images (known pixels copied from the input).
        raw: (B, C, H, W) G(z*) before the known pixels are pasted back.
        z: the optimised latents.
        free: bool (C, H, W): the latents that were optimised.
        n_free: number of free latents per image.
        losses: the objective per step (mean over the batch).
        seconds: wall time of the optimisation loop.
        cpu_seconds: CPU time of this process during the loop (steadier on a shared machine).
        incremental: whether the steps ran the cone generator (only the cone's patches).
        patches_per_step: patch-bijector evaluations of the ``rg`` layer per generator call.
        steps: the number of optimisation steps.
    """

    x: Tensor
    raw: Tensor
    z: Tensor
    free: Tensor
    n_free: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    incremental: bool = False
    patches_per_step: int = 0
    steps: int = 0

    @property
    def ms_per_step(self) -> float:
        """CPU milliseconds per optimisation step."""
        return 1000.0 * self.cpu_seconds / max(1, self.steps)


def inpaint(
    model: nn.Module,
    x: Tensor,
    mask: Tensor,
    steps: int = 200,
    lr: float = 0.05,
    region: str = "cone",
    method: str = "map",
    noise_sigma: float = 0.02,
    prior_weight: float = 1.0,
    fill: float | None = None,
    seed: int = 0,
    incremental: bool | None = None,
    context: int | None = None,
    *,
    model_context: Any = None,
) -> InpaintResult:
    """Complete the masked pixels of ``x`` by changing only the latents whose cone meets the mask.

    ``region="all"`` (full-image inpainting, the O(L²) baseline) frees every latent and minimises

        E(z) = Σ_{known pixels} (G(z) − x)² / (2σ²)  −  prior_weight · log p_Z(z)

    running the whole generator G at every step. ``region="cone"`` frees only the touched latents
    z_T (O(log L) of them for a fixed hole); the others stay at their encoded values. With
    ``incremental`` (the default whenever the model's only position-mixing layer is one ``rg``)
    each step runs :class:`~flowdsl.runtime.explain.cone.ConeGenerator`: only the patches in the
    causal cone of the hole dilated by ``context`` pixels (default: the rg kernel K) are
    regenerated, and the data term covers the known pixels of that cone's window W (which holds
    the hole and a ring of at least ``context`` known pixels around it):

        E_T(z_T) = Σ_{known pixels in W} (G(z)_W − x_W)² / (2σ²)  −  prior_weight · Σ_T log p(z_i)

    so a step costs O(log L) patch evaluations. (Far known pixels that the coarse free latents
    also move are left out of the data term: that is the locality the O(log L) cost rests on;
    they are known, so the completed image keeps them anyway.) The hole's pixels depend only on z_T, so the
    completion is G(z*) on the hole either way. ``incremental=False`` keeps the whole generator
    and the data term on all known pixels for the cone region too.

    ``method="map"`` minimises the energy with Adam (lr ``lr``); ``method="langevin"`` samples
    exp(−E) with unadjusted Langevin steps of size ``lr``·σ², σ = ``noise_sigma``.

    A conditional model encodes, decodes and scores the prior given ``model_context`` (what
    ``model(x, context=...)`` takes: one context, or one per image); it runs the whole generator
    (``incremental`` defaults to False; ``incremental=True`` is a FlowDSLError: the cone generator
    regenerates patches without a context).

    Args:
        x: (C, H, W) or (B, C, H, W) images in the model's space.
        mask: (H, W) or (C, H, W) bool, True = missing.
        fill: value written into the hole before encoding (default: the mean of the known pixels).
    """
    from flowdsl.runtime.explain.cone import ConeGenerator, only_rg_mixes_positions

    model = model.eval()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    C, H, W = x.shape[1:]
    m = mask.to(torch.bool).to(x.device)
    if m.dim() == 2:
        m = m.unsqueeze(0).expand(C, H, W)
    if region not in ("cone", "all"):
        raise ValueError(f"region must be 'cone' or 'all', got {region!r}")
    if method not in ("map", "langevin"):
        raise ValueError(f"method must be 'map' or 'langevin', got {method!r}")
    known = (~m).to(x.dtype)
    fill_v = float((x * known).sum() / known.sum().clamp_min(1) / x.shape[0]) if fill is None else fill
    x_in = torch.where(m, torch.full_like(x, fill_v), x)
    cv = encode_model_context(model, model_context, x.shape[0])
    with torch.no_grad():
        z0, _ = model(x_in, **context_kw(cv))
    rg = only_rg_mixes_positions(model)
    full_patches = sum(rg._patches) if rg is not None else 0
    if incremental is None:
        incremental = region == "cone" and rg is not None and getattr(model, "identity_layout", False) and cv is None
    if incremental and region != "cone":
        raise ValueError("incremental inpainting frees the cone's latents only (region='cone')")
    if incremental and cv is not None:
        raise FlowDSLError(
            f"incremental (cone) inpainting does not take a context yet, and this model declares "
            f"`{model.context_info.declared}`; use incremental=False (the whole generator, given the context)"
        )
    gen = ConeGenerator(model, m.cpu(), context) if incremental else None
    if region == "all":
        free = torch.ones(C, H, W, dtype=torch.bool, device=x.device)
    elif gen is not None:
        free = torch.zeros(C, H * W, dtype=torch.bool, device=x.device)
        free[:, gen.latents] = True
        free = free.view(C, H, W)
    else:
        free = touched_latents(model, m.cpu(), model_context=model_context, batch=x.shape[0]).to(x.device)

    if gen is not None:
        zf = gen.gather(z0).clone().requires_grad_(True)
        x_w, known_w = gen.window(x), gen.window(known)

        def energy_of(zt: Tensor) -> Tensor:
            fit = (((gen.generate(zt, z0) - x_w) * known_w) ** 2).reshape(x.shape[0], -1).sum(1)
            return fit / (2 * noise_sigma**2) - prior_weight * gen.log_prior(zt, z0)

    else:
        zf = z0.clone().requires_grad_(True)

        def energy_of(zt: Tensor) -> Tensor:
            z = torch.where(free, zt, z0)
            fit = (((model.inverse(z, **context_kw(cv)) - x) * known) ** 2).reshape(x.shape[0], -1).sum(1)
            return fit / (2 * noise_sigma**2) - prior_weight * (
                model.prior.log_prob(z) if cv is None else model._prior_log_prob(z, cv)
            )

    opt = torch.optim.Adam([zf], lr=lr) if method == "map" else None
    rng = torch.Generator(device=x.device).manual_seed(seed)
    losses: list[Tensor] = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(steps):
        energy = energy_of(zf)
        (g,) = torch.autograd.grad(energy.sum(), zf)  # only z: the model's parameters get no grads
        if opt is not None:
            zf.grad = g
            opt.step()
        else:
            eps = lr * noise_sigma**2
            with torch.no_grad():
                zf.add_(
                    -eps * g
                    + math.sqrt(2 * eps) * torch.randn(zf.shape, generator=rng, device=zf.device, dtype=zf.dtype)
                )
        losses.append(energy.detach().mean())
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    with torch.no_grad():
        z = gen.scatter(z0, zf) if gen is not None else torch.where(free, zf, z0)
        raw = model.inverse(z, **context_kw(cv))
    return InpaintResult(
        torch.where(m, raw, x),
        raw,
        z.detach(),
        free.cpu(),
        int(free.sum()),
        [float(v) for v in losses],
        seconds,
        cpu_seconds,
        incremental=bool(gen is not None),
        patches_per_step=gen.patches_per_step if gen is not None else full_patches,
        steps=steps,
    )
