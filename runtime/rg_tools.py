"""Explaining an RG-Flow model: receptive fields, scale and temperature mixing, inpainting.

Everything here works on a compiled model (``flowdsl.compile``) through its public API
(``model(x)``, ``model.inverse(z)``, ``model.prior``, ``model.latent_scales()``); the causal
cones come from the lattice of the ``rg`` layer (:mod:`flowdsl.runtime.layers._rg_lattice`).
Images are in the model's space (x on the [0, 1) scale for image data); z has the shape of x.

    receptive_fields(model)            RF_l = E_z Σ_c |∂x_c/∂z_l|, one map per level
    scale_mix(model, xa, xb, lam)      levels ≥ lam from A, the finer ones from B
    temperature_mix(model, n, lam)     levels ≥ lam drawn at T_high, the finer ones at T_low
    touched_latents(model, mask)       the latents whose causal cone meets the mask
    inpaint(model, x, mask)            MAP (or Langevin) over the touched latents only
    inpaint_benchmark()                touched latents and time vs L for a fixed hole (markdown)
    quick_fit(model, steps)            a few MLE steps on the spec's data (for pictures and benchmarks)

Picture writers (matplotlib, Agg): :func:`plot_receptive_fields`, :func:`plot_mix_grid`,
:func:`plot_inpainting`.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from flowdsl.runtime.layers.rg import RGFlow

__all__ = [
    "find_rg",
    "latent_levels",
    "sample_latents",
    "randomise_parameters",
    "ReceptiveFields",
    "receptive_fields",
    "scale_mix",
    "temperature_mix",
    "touched_latents",
    "InpaintResult",
    "inpaint",
    "inpaint_benchmark",
    "quick_fit",
    "rg_spec_text",
    "plot_receptive_fields",
    "plot_mix_grid",
    "plot_inpainting",
]

#: step classes that act on each position separately (they do not widen a causal cone)
_POINTWISE_STEPS = {"ActNorm", "Conv1x1", "Permute", "FrozenConv1x1", "FrozenActNorm"}


# ------------------------------------------------------------------------------------------
# basics
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


def _dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


def sample_latents(model: nn.Module, n: int, temperature: float = 1.0, seed: int | None = None) -> Tensor:
    """n draws of z from the model's prior at ``temperature`` (reproducible with ``seed``)."""
    dtype, device = _dtype_device(model)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
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


# ------------------------------------------------------------------------------------------
# receptive fields
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
) -> ReceptiveFields:
    """RF_l = E_{z~p_T}|∂G(z)/∂z_l| summed over the image channels, one latent per level.

    G = ``model.inverse``; the expectation is a Monte Carlo mean over ``n_samples`` prior draws
    at ``temperature``. By default the latent of each level nearest the image centre is used.
    Cost: C forward-mode passes (one per latent channel) of a batch of ``n_samples`` per level.
    """
    model = model.eval()
    levels = latent_levels(model)
    if levels.dim() != 3:
        raise ValueError("receptive fields need image data (C, H, W)")
    C, H, W = levels.shape
    pos = list(positions) if positions is not None else _level_positions(levels)
    z = sample_latents(model, n_samples, temperature, seed)
    maps = []
    for (y, x) in pos:
        acc = torch.zeros(H, W, dtype=torch.float64)
        for c in range(C):
            v = torch.zeros_like(z)
            v[:, c, y, x] = 1.0
            jv = _jvp(model.inverse, z, v).detach()
            acc += jv.abs().sum(dim=1).mean(dim=0).to("cpu", torch.float64)
        maps.append(acc / C)
    cones = None
    rgs = find_rg(model)
    if len(rgs) == 1 and tuple(rgs[0].shape) == (C, H, W):
        plan = rgs[0].plan()
        from flowdsl.runtime.layers._rg_lattice import cone_mask

        cs = []
        for (y, x) in pos:
            e = torch.zeros(H, W, dtype=torch.bool)
            e[y, x] = True
            cs.append(cone_mask(plan, e).any(dim=0))
        cones = torch.stack(cs)
    return ReceptiveFields(torch.stack(maps), pos, cones, n_samples, temperature)


# ------------------------------------------------------------------------------------------
# mixing
@torch.no_grad()
def scale_mix(model: nn.Module, xa: Tensor, xb: Tensor, lam: int) -> Tensor:
    """Images whose latents of level ≥ ``lam`` come from ``xa`` and the finer ones from ``xb``.

    xa, xb: (B, C, H, W) (broadcast against each other). ``lam`` = 0 gives A back, ``lam`` =
    number of levels gives B back.
    """
    za, _ = model(xa)
    zb, _ = model(xb)
    coarse = (latent_levels(model) >= lam).to(za.device)
    return model.inverse(torch.where(coarse, za, zb))


@torch.no_grad()
def temperature_mix(
    model: nn.Module, n: int, lam: int = 1, t_high: float = 0.8, t_low: float = 0.2, seed: int = 0
) -> Tensor:
    """n samples with the latents of level ≥ ``lam`` drawn at ``t_high`` and the rest at ``t_low``.

    The same seed gives the same underlying draws for every ``lam`` (the prior noise is drawn at
    T = 1 and scaled per level), so a row of a grid varies only the split between the levels.
    """
    hi = sample_latents(model, n, t_high, seed)
    lo = sample_latents(model, n, t_low, seed)  # the same noise, scaled (prior samples are T·ε)
    coarse = (latent_levels(model) >= lam).to(hi.device)
    return model.inverse(torch.where(coarse, hi, lo))


# ------------------------------------------------------------------------------------------
# inpainting
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
                zf.add_(-eps * g + math.sqrt(2 * eps) * torch.randn(zf.shape, generator=gen, device=zf.device, dtype=zf.dtype))
        losses.append(float(energy.detach().mean()))
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    with torch.no_grad():
        z = torch.where(free, zf, z0)
        raw = model.inverse(z)
    return InpaintResult(torch.where(m, raw, x), raw, z.detach(), free.cpu(), int(free.sum()), losses, seconds, cpu_seconds)


def quick_fit(model: nn.Module, steps: int, data: str | None = None, seed: int = 0, batch: int | None = None, log=None) -> list[float]:
    """A few Adam steps of maximum likelihood on the spec's data; returns bits/dim per step.

    For pictures of an otherwise untrained spec and for the benchmark; ``flowdsl train`` is the
    real training command. Uses the spec's ``train(batch, lr)`` and ``dequantize`` settings.
    """
    from flowdsl.runtime.data import load_for_spec
    from flowdsl.runtime.data.dequantize import bits_per_dim, dequantize

    spec = model.spec
    ds = load_for_spec(spec, data=data, split="train", seed=seed)
    batch = batch or int(getattr(spec.train, "batch", 64) or 64)
    lr = float(getattr(spec.train, "lr", 1e-3) or 1e-3)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    dims = math.prod(model.input_shape)
    dtype, _ = _dtype_device(model)
    history = []
    model.train()
    for step in range(steps):
        idx = torch.randint(len(ds), (batch,), generator=g)
        x = dequantize(ds.x[idx], ds.levels, mode=spec.dequantize, generator=g).to(dtype)
        lp = model.log_prob(x)
        loss = -lp.mean() / dims
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
        opt.step()
        history.append(float(bits_per_dim(lp.detach(), dims, ds.levels).mean()))
        if log is not None and (step == 0 or (step + 1) % max(1, steps // 5) == 0):
            log(f"  fit step {step + 1}/{steps}: {history[-1]:.3f} bits/dim")
    model.eval()
    return history


def rg_spec_text(L: int, kernel: int = 4, channels: int = 1, hidden: int = 32, depth: int = 1, data: str = "patches") -> str:
    """A small RG-Flow spec for an L×L image (used by the benchmark and the tests)."""
    body = " ".join(["actnorm coupling(kind=affine, net=mlp, mask=checkerboard, hidden=%d)" % hidden] * depth)
    return (
        f"flow rg_L{L} {{\n"
        f"  input image(channels={channels}, height={L}, width={L}, levels=256)\n"
        f"  rg(kernel={kernel}) {{\n"
        f"    disentangler {{ {body} }}\n"
        f"    decimator {{ {body} }}\n"
        f"  }}\n"
        f"  prior laplace(scale=0.7071)\n"
        f"  train(data={data}, batch=32, lr=2e-3, seed=0)\n"
        f"}}\n"
    )


def inpaint_benchmark(
    sizes: Sequence[int] = (8, 16, 32, 64),
    hole: int = 4,
    kernel: int = 4,
    channels: int = 1,
    hidden: int = 32,
    steps: int = 50,
    fit_steps: int = 0,
    data: str = "patches",
    seed: int = 0,
    repeats: int = 1,
    verbose: bool = False,
) -> tuple[str, list[dict]]:
    """How the touched latents and the time grow with L for a fixed hole; cone vs all latents.

    For each L an RG-Flow is compiled from :func:`rg_spec_text`. With ``fit_steps`` > 0 it is
    trained for that many MLE steps on ``data`` (natural-image crops by default) and the ground
    truth is a held-out crop; otherwise its weights are randomised and the ground truth is a
    model sample at T = 0.7. A hole×hole square at the centre is erased, then :func:`inpaint`
    (MAP, ``steps`` Adam steps) runs once over the touched latents and once over all latents.
    The optimisation is deterministic; with ``repeats`` > 1 it is timed that many times and the
    fastest run is reported (the machines are shared). Returns (markdown table, rows).
    """
    import flowdsl

    rows = []
    for L in sizes:
        model = flowdsl.compile(flowdsl.parse(rg_spec_text(L, kernel, channels, hidden, data=data)), seed=seed)
        row: dict = {"L": L, "latents": channels * L * L}
        if fit_steps > 0:
            t0 = time.perf_counter()
            hist = quick_fit(model, fit_steps, seed=seed)
            row["fit_bpd"] = sum(hist[-20:]) / len(hist[-20:])
            row["fit_seconds"] = time.perf_counter() - t0
            from flowdsl.runtime.data import load_for_spec
            from flowdsl.runtime.data.dequantize import dequantize

            test = load_for_spec(model.spec, split="test", seed=seed, n=8)
            truth = dequantize(test.x[seed % len(test) : seed % len(test) + 1], test.levels, mode="none")
        else:
            model = randomise_parameters(model, std=0.05, seed=seed).eval()
            with torch.no_grad():
                truth = model.inverse(sample_latents(model, 1, 0.7, seed))
        mask = torch.zeros(L, L, dtype=torch.bool)
        c = L // 2 - hole // 2
        mask[c : c + hole, c : c + hole] = True
        levels = latent_levels(model)[0]
        row["levels"] = int(levels.max()) + 1
        fill = truth[0][:, ~mask].mean()
        row["mean_fill_rmse"] = float(((truth[0][:, mask] - fill) ** 2).mean().sqrt())
        for region in ("cone", "all"):
            runs = [inpaint(model, truth, mask, steps=steps, lr=0.05, region=region, seed=seed) for _ in range(max(1, repeats))]
            res = min(runs, key=lambda r: r.cpu_seconds)
            hole_err = float(((res.x - truth)[0][:, mask] ** 2).mean().sqrt())
            known_err = float(((res.raw - truth)[0][:, ~mask] ** 2).mean().sqrt())
            row[region] = {"n_free": res.n_free, "seconds": res.cpu_seconds, "wall": res.seconds, "hole_rmse": hole_err, "known_rmse": known_err, "x": res.x}
            if region == "cone":
                row["per_level"] = [int((res.free[0] & (levels == h)).sum()) * channels for h in range(row["levels"])]
        row["cone_vs_all"] = float(((row["cone"]["x"] - row["all"]["x"])[0][:, mask] ** 2).mean().sqrt())
        for region in ("cone", "all"):
            del row[region]["x"]
        rows.append(row)
        if verbose:
            fit = f", fit {row['fit_seconds']:.0f} s to {row['fit_bpd']:.2f} bits/dim" if fit_steps > 0 else ""
            print(f"L={L}: touched {row['cone']['n_free']} / {row['latents']} ({row['cone']['seconds']:.2f} s vs {row['all']['seconds']:.2f} s{fit})", flush=True)
    fit_cols = fit_steps > 0
    head = (
        f"| L | levels | latents | touched (cone) | per level (fine→coarse) | touched / log2 L | CPU time cone (s, {steps} steps) | CPU time all (s, {steps} steps) "
        "| hole RMSE cone | hole RMSE all | RMSE cone vs all (hole) | hole RMSE mean-fill | known-pixel RMSE cone | known-pixel RMSE all |"
        + (" model bits/dim |" if fit_cols else "")
        + "\n|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        + ("---:|" if fit_cols else "")
        + "\n"
    )
    lines = []
    for r in rows:
        cone, al = r["cone"], r["all"]
        lines.append(
            f"| {r['L']} | {r['levels']} | {r['latents']} | {cone['n_free']} | {', '.join(map(str, r['per_level']))} "
            f"| {cone['n_free'] / math.log2(r['L']):.1f} | {cone['seconds']:.2f} | {al['seconds']:.2f} "
            f"| {cone['hole_rmse']:.3f} | {al['hole_rmse']:.3f} | {r['cone_vs_all']:.3f} | {r['mean_fill_rmse']:.3f} "
            f"| {cone['known_rmse']:.4f} | {al['known_rmse']:.4f} |"
            + (f" {r['fit_bpd']:.2f} |" if fit_cols else "")
        )
    return head + "\n".join(lines) + "\n", rows


# ------------------------------------------------------------------------------------------
# pictures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _outline(ax, mask: Tensor, color: str, style: str = "-", width: float = 1.2) -> None:
    """Draw the pixel-edge outline of a bool (H, W) mask."""
    m = mask.to(torch.bool).cpu()
    H, W = m.shape
    pad = torch.zeros(H + 2, W + 2, dtype=torch.bool)
    pad[1:-1, 1:-1] = m
    segs = []
    for y in range(H):  # a picture helper: loops over pixels are fine here
        for x in range(W):
            if not m[y, x]:
                continue
            if not pad[y, x + 1]:
                segs.append([(x - 0.5, y - 0.5), (x + 0.5, y - 0.5)])
            if not pad[y + 2, x + 1]:
                segs.append([(x - 0.5, y + 0.5), (x + 0.5, y + 0.5)])
            if not pad[y + 1, x]:
                segs.append([(x - 0.5, y - 0.5), (x - 0.5, y + 0.5)])
            if not pad[y + 1, x + 2]:
                segs.append([(x + 0.5, y - 0.5), (x + 0.5, y + 0.5)])
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(segs, colors=color, linestyles=style, linewidths=width))


def _to_img(x: Tensor):
    """(C, H, W) in [0, 1] -> numpy (H, W) or (H, W, 3) for imshow."""
    a = x.detach().to("cpu", torch.float32).clamp(0, 1)
    if a.shape[0] == 1:
        return a[0].numpy()
    return a[:3].permute(1, 2, 0).numpy()


def plot_receptive_fields(rf: ReceptiveFields, path: str | Path, title: str = "") -> str:
    """One panel per level: the RF map (log colour scale), the latent's position and its cone."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    n = rf.maps.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    ext = rf.extent()
    for h, ax in enumerate(axes[0]):
        m = rf.maps[h].numpy()
        vmax = float(m.max()) if m.max() > 0 else 1.0
        im = ax.imshow(m + vmax * 1e-4, cmap="magma", norm=LogNorm(vmin=vmax * 1e-4, vmax=vmax * 1.0001))
        y, x = rf.positions[h]
        ax.plot([x], [y], marker="+", color="cyan", markersize=10, mew=2)
        if rf.cones is not None:
            _outline(ax, rf.cones[h], "cyan", "--", 1.0)
        ax.set_title(f"level {h}: latent ({y},{x})\n90% mass in {ext[h]}×{ext[h]}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title or f"receptive fields E|∂x/∂z_l| ({rf.n_samples} samples, T={rf.temperature:g}); dashed: causal cone", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def plot_mix_grid(
    rows: Sequence[Sequence[Tensor]],
    col_titles: Sequence[str],
    path: str | Path,
    row_titles: Sequence[str] | None = None,
    title: str = "",
) -> str:
    """A grid of images (each (C, H, W) in [0, 1]) with column (and row) titles."""
    plt = _plt()
    nr, nc = len(rows), len(rows[0])
    fig, axes = plt.subplots(nr, nc, figsize=(max(1.6 * nc + 0.6, 8.5), 1.6 * nr + 0.8), squeeze=False)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            ax = axes[i][j]
            a = _to_img(im)
            ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col_titles[j], fontsize=8)
            if j == 0 and row_titles:
                ax.set_ylabel(row_titles[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def plot_inpainting(x: Tensor, mask: Tensor, results: dict[str, InpaintResult], levels: Tensor, path: str | Path) -> str:
    """Original, corrupted, the touched latents (coloured by level) and each completion."""
    plt = _plt()
    n = 3 + len(results)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.0), squeeze=False)
    ax = axes[0]
    m = mask.to(torch.bool).cpu()
    if m.dim() == 3:
        m = m.any(0)
    corrupted = x.detach().cpu().clone()
    corrupted[:, m] = 0.5
    _outline(ax[1], m, "red", "-", 1.5)
    panels = [("original", x), ("corrupted", corrupted)]
    for a, (t, im) in zip(ax[:2], panels):
        arr = _to_img(im)
        a.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        a.set_title(t, fontsize=9)
    any_res = next(iter(results.values()))
    lv = levels[0].cpu().float() if levels.dim() == 3 else levels.cpu().float()
    cone_free = results.get("cone", any_res).free
    cf = cone_free.any(0) if cone_free.dim() == 3 else cone_free
    shown = torch.where(cf, lv, torch.full_like(lv, float("nan")))
    ax[2].imshow(shown.numpy(), cmap="viridis", vmin=0, vmax=float(lv.max()), interpolation="nearest")
    _outline(ax[2], m, "red", "-", 1.5)
    ax[2].set_title(f"touched latents: {results.get('cone', any_res).n_free}\n(colour = level)", fontsize=9)
    for a, (name, r) in zip(ax[3:], results.items()):
        arr = _to_img(r.x[0])
        a.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        a.set_title(f"{name}: {r.n_free} free latents\n{r.seconds:.2f} s", fontsize=9)
    for a in ax:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
