"""Samples from a trained flow: image grids (PNG) and scatter plots for vector flows.

``flowdsl sample RUN|CKPT --n 64 --temperature 0.7 -o grid.png`` loads the best checkpoint of a
run (or the given file) — its spec text comes from the checkpoint, so no spec file is needed —
draws n samples at the temperature and writes

* image specs: a grid of the samples quantised back to the data's levels (``floor(x·levels)``),
  upscaled with nearest-neighbour so each cell is at least 64 pixels wide;
* vector specs: a scatter plot of the first two coordinates over the training data.

Sampling is seeded (``--seed``) and, under torchrun, sharded: every process draws ``n / N``
samples from its own stream and rank 0 gathers and writes them.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["draw_samples", "image_grid", "save_image_grid", "save_scatter", "write_samples", "sample_grid"]


def _seed_for(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") & ((1 << 63) - 1)


@torch.no_grad()
def draw_samples(model: nn.Module, n: int, temperature: float = 1.0, seed: int = 0, dist_info: Any = None) -> Tensor:
    """``n`` samples (n, *input_shape) on the [0, 1) scale (images) or real (vectors).

    Every process draws its shard from the global RNG forked and seeded with (seed, rank), so
    the caller's random state is left untouched.
    """
    from flowdsl.runtime.training.distributed import DistInfo, all_gather_cat
    from flowdsl.runtime.training.evaluation import model_device

    info = dist_info or DistInfo()
    per = -(-int(n) // info.world)
    was_training = model.training
    model.eval()
    dev = model_device(model)
    try:  # the generator of the model's device is forked too (CUDA: its own stream of numbers)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(_seed_for("sample", seed, info.rank))
            x = model.sample(per, temperature=temperature)
    finally:
        model.train(was_training)
    x = torch.nan_to_num(x.float(), nan=0.0, posinf=1e6, neginf=-1e6)
    return all_gather_cat(x, info)[: int(n)]


def image_grid(x01: Tensor, levels: Optional[int], min_cell: int = 64, pad: int = 2) -> np.ndarray:
    """(n, C, H, W) samples on [0, 1) → uint8 grid image (H', W') or (H', W', 3)."""
    x = x01.detach().float().cpu()
    n, c, h, w = x.shape
    if levels is not None:
        k = torch.floor(x * levels).clamp(0, levels - 1)
        img = (k * (255.0 / max(levels - 1, 1))).round()
    else:
        img = (x.clamp(0, 1) * 255).round()
    img = img.to(torch.uint8).numpy()
    if c == 3:
        img = img.transpose(0, 2, 3, 1)
    else:
        img = img[:, 0]
    scale = max(1, math.ceil(min_cell / max(h, w)))
    if scale > 1:
        img = img.repeat(scale, axis=1).repeat(scale, axis=2)
    ch, cw = h * scale, w * scale
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    shape = (rows * (ch + pad) + pad, cols * (cw + pad) + pad) + ((3,) if c == 3 else ())
    grid = np.full(shape, 160, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y0, x0 = pad + r * (ch + pad), pad + q * (cw + pad)
        grid[y0 : y0 + ch, x0 : x0 + cw] = img[i]
    return grid


def save_image_grid(x01: Tensor, levels: Optional[int], path: str | os.PathLike) -> None:
    from PIL import Image

    from flowdsl.runtime.training.checkpoint import atomic_write

    grid = image_grid(x01, levels)
    im = Image.fromarray(grid, mode="RGB" if grid.ndim == 3 else "L")
    atomic_write(path, lambda f: im.save(f, format="PNG"))


def save_scatter(samples: Tensor, path: str | os.PathLike, data: Optional[Tensor] = None, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowdsl.runtime.training.checkpoint import atomic_write

    s = samples.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if s.shape[1] == 1:
        if data is not None:
            ax.hist(data.float().numpy()[:, 0], bins=100, density=True, alpha=0.4, color="0.5", label="data")
        ax.hist(s[:, 0], bins=100, density=True, alpha=0.6, color="C0", label="samples")
    else:
        if data is not None:
            d = data.float().numpy().reshape(len(data), -1)
            ax.scatter(d[:, 0], d[:, 1], s=2, alpha=0.25, color="0.5", label="data")
        ax.scatter(s[:, 0], s[:, 1], s=3, alpha=0.7, color="C0", label="samples")
        ax.set_aspect("equal", adjustable="datalim")
        if s.shape[1] > 2:
            title = (title + " " if title else "") + f"(first 2 of {s.shape[1]} coordinates)"
    ax.legend(loc="upper right", markerscale=4)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


def write_samples(
    x: Tensor,
    path: str | os.PathLike,
    levels: Optional[int],
    image: bool,
    data: Optional[Tensor] = None,
    title: str = "",
) -> None:
    """Write samples ``x`` as an image grid (images) or a scatter plot (vectors)."""
    if image:
        save_image_grid(x, levels, path)
    else:
        save_scatter(x, path, data=data, title=title)


def sample_grid(
    ckpt_or_run: str | os.PathLike,
    n: int = 64,
    temperature: float = 0.7,
    out_png: str | os.PathLike = "grid.png",
    seed: int = 0,
    data: Optional[str] = None,
    factory: Any = None,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """Load a run folder or checkpoint, draw ``n`` samples and write ``out_png``.

    Vector flows are drawn over their training data (``data`` overrides the name stored in the
    run's settings; pass ``"none"`` to leave it out). Under torchrun the sampling is sharded and
    rank 0 writes the file. ``device``: where the model samples (``auto``, ``cpu``, ``cuda[:N]``;
    under torchrun ``cuda:$LOCAL_RANK``). The samples are drawn from the global generator of that
    device, so the same seed gives other samples on CUDA than on the CPU.
    Returns ``{"path", "n", "temperature", "step", "spec"}``.
    """
    from flowdsl.runtime.training.device import resolve_device
    from flowdsl.runtime.training.distributed import init_from_env, shutdown
    from flowdsl.runtime.training.models import load_model

    info = init_from_env(resolve_device(str(device)))
    try:
        spec, model, ckpt = load_model(ckpt_or_run, factory=factory, device=info.device)
        x = draw_samples(model, n, temperature, seed, info)
        image = getattr(spec.input, "kind", "image") == "image"
        levels = getattr(spec.input, "levels", None) if image else None
        data_x = None
        if not image:
            name = data or (ckpt.get("config") or {}).get("data") or getattr(spec.train, "data", None)
            if name and name != "none":
                from flowdsl.runtime.data import load_for_spec

                data_x = load_for_spec(spec, name, "train", seed=int((ckpt.get("config") or {}).get("seed", 0))).x[
                    :5000
                ]
        if info.main:
            write_samples(
                x, out_png, levels, image, data=data_x, title=f"{getattr(spec, 'name', '')} T={temperature:g}"
            )
    finally:
        shutdown(info)
    return {
        "path": str(out_png),
        "n": int(n),
        "temperature": float(temperature),
        "step": int(ckpt["step"]),
        "spec": getattr(spec, "name", ""),
    }
