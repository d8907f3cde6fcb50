"""Pictures that explain an RG-Flow model (matplotlib, Agg backend).

    plot_receptive_fields(rf, path)    one RF map per level, with the latent and its causal cone
    plot_mix_grid(rows, titles, path)  a grid of images (scale and temperature mixing)
    plot_inpainting(x, mask, results)  original, corrupted, touched latents and completions

Each writes a PNG (creating its folder) and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from flowdsl.runtime.explain.inpaint import InpaintResult
from flowdsl.runtime.explain.receptive import ReceptiveFields

__all__ = ["plot_receptive_fields", "plot_mix_grid", "plot_inpainting"]


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


def _save(plt, fig, path: str | Path) -> str:
    """Lay out ``fig``, write it to ``path`` (120 dpi, format by suffix, PNG without one) atomically
    through :mod:`flowdsl.outputs` (the folder must exist; folders, devices, FIFOs refused), close it."""
    from flowdsl.outputs import atomic_write

    fig.tight_layout()
    path = Path(path)
    fmt = path.suffix.lower()[1:] or "png"
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=120, format=fmt), what="picture")
    finally:
        plt.close(fig)
    return str(path)


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
    fig.suptitle(
        title or f"receptive fields E|∂x/∂z_l| ({rf.n_samples} samples, T={rf.temperature:g}); dashed: causal cone",
        fontsize=10,
    )
    return _save(plt, fig, path)


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
    return _save(plt, fig, path)


def plot_inpainting(
    x: Tensor, mask: Tensor, results: dict[str, InpaintResult], levels: Tensor, path: str | Path
) -> str:
    """Original, corrupted, the touched latents (coloured by level, with a colour bar) and each
    completion (the hole outlined in red everywhere)."""
    plt = _plt()
    from matplotlib.colors import BoundaryNorm, ListedColormap

    n = 3 + len(results)
    fig, axes = plt.subplots(1, n, figsize=(2.7 * n + 0.6, 3.2), squeeze=False)
    ax = axes[0]
    m = mask.to(torch.bool).cpu()
    if m.dim() == 3:
        m = m.any(0)
    corrupted = x.detach().cpu().clone()
    corrupted[:, m] = 0.5
    panels = [("original", x), ("corrupted", corrupted)]
    for a, (t, im) in zip(ax[:2], panels):
        arr = _to_img(im)
        a.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        a.set_title(t, fontsize=9)
    any_res = next(iter(results.values()))
    lv = levels[0].cpu().float() if levels.dim() == 3 else levels.cpu().float()
    n_lv = int(lv.max()) + 1
    cone_free = results.get("cone", any_res).free
    cf = cone_free.any(0) if cone_free.dim() == 3 else cone_free
    shown = torch.where(cf, lv, torch.full_like(lv, float("nan")))
    cmap = ListedColormap(plt.get_cmap("viridis", n_lv)(range(n_lv)))
    cmap.set_bad("white")
    norm = BoundaryNorm([h - 0.5 for h in range(n_lv + 1)], n_lv)
    im = ax[2].imshow(shown.numpy(), cmap=cmap, norm=norm, interpolation="nearest")
    cb = fig.colorbar(im, ax=ax[2], fraction=0.046, pad=0.04, ticks=list(range(n_lv)))
    cb.set_label("RG level of the latent (0 = finest)", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    ax[2].set_title(
        f"touched latents: {results.get('cone', any_res).n_free}\n(white: not touched; red: hole)", fontsize=9
    )
    for a, (name, r) in zip(ax[3:], results.items()):
        arr = _to_img(r.x[0])
        a.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        how = "cone only" if r.incremental else "whole G"
        a.set_title(f"{name}: {r.n_free} free latents\n{r.ms_per_step:.1f} ms/step ({how})", fontsize=9)
    for a in ax:
        _outline(a, m, "red", "-", 1.2)
        a.set_xticks([])
        a.set_yticks([])
    return _save(plt, fig, path)
