"""Receptive fields of an RG-Flow model: RF_l = E_z Σ_c |∂x_c/∂z_l|, one map per level.

The Jacobian columns come from forward-mode products of ``model.inverse``; the structural causal
cones come from the lattice of the ``rg`` layer (:mod:`flowdsl.runtime.layers._rg_lattice`).
:func:`flowdsl.runtime.explain.plots.plot_receptive_fields` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from flowdsl.runtime.explain.latents import context_kw, encode_model_context, find_rg, latent_levels, sample_latents

__all__ = ["ReceptiveFields", "receptive_fields"]


def _level_positions(levels: Tensor) -> list[tuple[int, int]]:
    """For each level, the position of that level nearest the image centre."""
    lv = levels[0] if levels.dim() == 3 else levels
    H, W = lv.shape
    ys = torch.arange(H).view(H, 1).expand(H, W)
    xs = torch.arange(W).view(1, W).expand(H, W)
    d = (ys - H / 2).abs() + (xs - W / 2).abs()
    out = []
    for h in range(int(lv.max()) + 1):
        dd = torch.where(lv == h, d, torch.full_like(d, float("inf")))
        k = int(torch.argmin(dd.reshape(-1)))
        out.append((k // W, k % W))
    return out


@dataclass
class ReceptiveFields:
    """RF maps of one latent position per level.

    Attributes:
        maps: (levels, H, W): RF_l(y, x) = E_z Σ_c |∂x_c(y, x)/∂z_l|, averaged over the latent's
            channels (z_l = the C entries at the latent's position).
        positions: the latent (y, x) used for each level.
        cones: (levels, H, W) bool structural causal cones (None without an ``rg`` layer).
        n_samples, temperature: the expectation's Monte Carlo set-up.
    """

    maps: Tensor
    positions: list[tuple[int, int]]
    cones: Tensor | None
    n_samples: int
    temperature: float

    def extent(self, mass: float = 0.9) -> list[int]:
        """Per level: the side of the smallest square (centred on the latent, periodic) holding
        ``mass`` of the RF's total."""
        out = []
        L = self.maps.shape[-1]
        for m, (y, x) in zip(self.maps, self.positions):
            r = torch.roll(m, shifts=(L // 2 - y, L // 2 - x), dims=(0, 1))
            total = float(r.sum())
            side = L
            for s in range(1, L + 1):
                lo = L // 2 - (s - 1) // 2
                if float(r[lo : lo + s, lo : lo + s].sum()) >= mass * total:
                    side = s
                    break
            out.append(side)
        return out

    def support(self, rel: float = 1e-3) -> list[int]:
        """Per level: the number of pixels whose RF exceeds ``rel`` × its maximum."""
        return [int((m > rel * m.max()).sum()) for m in self.maps]


def _jvp(fn, z: Tensor, v: Tensor) -> Tensor:
    """J·v for J = ∂fn/∂z at z (forward mode; falls back to the double-vjp trick)."""
    try:
        return torch.func.jvp(fn, (z,), (v,))[1]
    except (RuntimeError, NotImplementedError):  # pragma: no cover - an op without forward AD
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            x = fn(z)
            u = torch.zeros_like(x, requires_grad=True)
            (g,) = torch.autograd.grad(x, z, u, create_graph=True)
            (jv,) = torch.autograd.grad(g, u, v)
        return jv


def receptive_fields(
    model: nn.Module,
    n_samples: int = 32,
    temperature: float = 1.0,
    positions: Sequence[tuple[int, int]] | None = None,
    seed: int = 0,
    *,
    model_context: Any = None,
) -> ReceptiveFields:
    """RF_l = E_{z~p_T}|∂G(z)/∂z_l| summed over the image channels, one latent per level.

    G = ``model.inverse``; the expectation is a Monte Carlo mean over ``n_samples`` prior draws
    at ``temperature``. By default the latent of each level nearest the image centre is used.
    Cost: C forward-mode passes (one per latent channel) of a batch of ``n_samples`` per level.
    A conditional model draws and decodes given ``model_context`` (one context, or one per sample).
    """
    model = model.eval()
    levels = latent_levels(model)
    if levels.dim() != 3:
        raise ValueError("receptive fields need image data (C, H, W)")
    C, H, W = levels.shape
    pos = list(positions) if positions is not None else _level_positions(levels)
    z = sample_latents(model, n_samples, temperature, seed, model_context=model_context)
    cv = encode_model_context(model, model_context, n_samples)
    maps = []
    for y, x in pos:
        acc = torch.zeros(H, W, dtype=torch.float64)
        for c in range(C):
            v = torch.zeros_like(z)
            v[:, c, y, x] = 1.0
            jv = _jvp(lambda zz: model.inverse(zz, **context_kw(cv)), z, v).detach()
            acc += jv.abs().sum(dim=1).mean(dim=0).to("cpu", torch.float64)
        maps.append(acc / C)
    cones = None
    rgs = find_rg(model)
    if len(rgs) == 1 and tuple(rgs[0].shape) == (C, H, W):
        plan = rgs[0].plan()
        from flowdsl.runtime.layers._rg_lattice import cone_mask

        cs = []
        for y, x in pos:
            e = torch.zeros(H, W, dtype=torch.bool)
            e[y, x] = True
            cs.append(cone_mask(plan, e).any(dim=0))
        cones = torch.stack(cs)
    return ReceptiveFields(torch.stack(maps), pos, cones, n_samples, temperature)
