"""Inpainting with an RG-Flow model: only the latents whose causal cone meets the hole change.

    touched_latents(model, mask)       the latents whose causal cone meets the mask
    inpaint(model, x, mask)            MAP (or Langevin) over the touched latents only

For a fixed hole the touched latents grow as O(log L) with the image side L (against L² for
all latents); :func:`flowdsl.runtime.bench.rg.inpaint_benchmark` measures that and
:func:`flowdsl.runtime.explain.plots.plot_inpainting` draws a completion.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from flowdsl.runtime.explain.latents import latent_levels, randomise_parameters
from flowdsl.runtime.layers.rg import RGFlow

__all__ = ["touched_latents", "InpaintResult", "inpaint"]

#: step classes that act on each position separately (they do not widen a causal cone)
_POINTWISE_STEPS = {"ActNorm", "Conv1x1", "Permute", "FrozenConv1x1", "FrozenActNorm"}


def _only_rg_mixes_positions(model: nn.Module) -> RGFlow | None:
    steps = getattr(model, "steps", None)
    if steps is None:
        return None
    rgs = [s for s in steps if isinstance(s, RGFlow)]
    if len(rgs) != 1:
        return None
    if all(isinstance(s, RGFlow) or type(s).__name__ in _POINTWISE_STEPS for s in steps):
        return rgs[0]
    return None


def touched_latents(model: nn.Module, mask: Tensor) -> Tensor:
    """Bool tensor of the input shape: the latents whose generation cone meets ``mask``.

    ``mask`` (H, W) or (C, H, W), True = missing pixel. When the model's only position-mixing
    layer is one ``rg`` (others act per position: actnorm, conv1x1, permute) the cone is exact
    and structural (:func:`~flowdsl.runtime.layers._rg_lattice.dependency_mask`). Otherwise it
    is probed: one vector-Jacobian product of ``model.inverse`` on a copy of the model with
    generic (randomised) weights, marking the latents with a non-zero derivative.
    """
    levels = latent_levels(model)
    C, H, W = levels.shape
    m = mask.to(torch.bool).cpu()
    if m.dim() == 2:
        m = m.unsqueeze(0).expand(C, H, W)
    rg = _only_rg_mixes_positions(model)
    if rg is not None:
        return rg.dependency_mask(m)
    probe = randomise_parameters(copy.deepcopy(model).double().eval(), std=0.1, seed=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        z = torch.randn(1, C, H, W, dtype=torch.float64, requires_grad=True)
        w = torch.rand(1, C, H, W, dtype=torch.float64) + 0.5
    with torch.enable_grad():
        x = probe.inverse(z)
        (g,) = torch.autograd.grad((x * w * m.to(x)).sum(), z)
    return g[0].abs() > 0


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
    """

    x: Tensor
    raw: Tensor
    z: Tensor
    free: Tensor
    n_free: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0


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
) -> InpaintResult:
    """Complete the masked pixels of ``x`` by changing only the latents whose cone meets the mask.

    Objective over the free latents z_F (the others stay at their encoded values):

        E(z) = Σ_{known pixels} (G(z) − x)² / (2σ²)  −  prior_weight · log p_Z(z)

    with σ = ``noise_sigma``. ``method="map"`` minimises E with Adam (lr ``lr``);
    ``method="langevin"`` samples exp(−E) with unadjusted Langevin steps of size ``lr``·σ².
    ``region="cone"`` frees the touched latents (O(log L) of them for a fixed hole);
    ``region="all"`` frees every latent (the O(L²) baseline).

    Args:
        x: (C, H, W) or (B, C, H, W) images in the model's space.
        mask: (H, W) or (C, H, W) bool, True = missing.
        fill: value written into the hole before encoding (default: the mean of the known pixels).
    """
    model = model.eval()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    C, H, W = x.shape[1:]
    m = mask.to(torch.bool).to(x.device)
    if m.dim() == 2:
        m = m.unsqueeze(0).expand(C, H, W)
    known = (~m).to(x.dtype)
    fill_v = float((x * known).sum() / known.sum().clamp_min(1) / x.shape[0]) if fill is None else fill
    x_in = torch.where(m, torch.full_like(x, fill_v), x)
    with torch.no_grad():
        z0, _ = model(x_in)
    if region == "cone":
        free = touched_latents(model, m.cpu()).to(x.device)
    elif region == "all":
        free = torch.ones(C, H, W, dtype=torch.bool, device=x.device)
    else:
        raise ValueError(f"region must be 'cone' or 'all', got {region!r}")
    zf = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([zf], lr=lr) if method == "map" else None
    if method not in ("map", "langevin"):
        raise ValueError(f"method must be 'map' or 'langevin', got {method!r}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    losses: list[float] = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(steps):
        z = torch.where(free, zf, z0)
        xr = model.inverse(z)
        fit = (((xr - x) * known) ** 2).reshape(x.shape[0], -1).sum(1) / (2 * noise_sigma**2)
        energy = fit - prior_weight * model.prior.log_prob(z)
        (g,) = torch.autograd.grad(energy.sum(), zf)  # only z: the model's parameters get no grads
        if opt is not None:
            zf.grad = g
            opt.step()
        else:
            eps = lr * noise_sigma**2
            with torch.no_grad():
                zf.add_(
                    -eps * g
                    + math.sqrt(2 * eps) * torch.randn(zf.shape, generator=gen, device=zf.device, dtype=zf.dtype)
                )
        losses.append(float(energy.detach().mean()))
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    with torch.no_grad():
        z = torch.where(free, zf, z0)
        raw = model.inverse(z)
    return InpaintResult(
        torch.where(m, raw, x), raw, z.detach(), free.cpu(), int(free.sum()), losses, seconds, cpu_seconds
    )
