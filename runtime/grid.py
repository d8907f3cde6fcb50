"""Image grids and scatter plots of samples, written as PNG files."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

__all__ = ["save_image_grid", "save_scatter"]


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, pad: int = 2, scale: int = 4) -> str:
    """Write (N, C, H, W) images with values in [0, 1] as a PNG grid (grey or RGB)."""
    from PIL import Image

    x = images.detach().to("cpu", torch.float32).clamp(0, 1).numpy()
    n, c, h, w = x.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol = int(math.ceil(n / nrow))
    grid = np.ones((ncol * (h + pad) + pad, nrow * (w + pad) + pad, 3), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, nrow)
        tile = x[i].transpose(1, 2, 0)
        if c == 1:
            tile = np.repeat(tile, 3, axis=2)
        elif c != 3:
            tile = np.repeat(tile[:, :, :1], 3, axis=2)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = tile
    img = Image.fromarray((grid * 255).round().astype(np.uint8))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return str(path)


def save_scatter(samples: torch.Tensor, path: str | Path, data: torch.Tensor | None = None, title: str = "") -> str:
    """Scatter plot of 2-D samples (first two coordinates), over the data when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = samples.detach().to("cpu", torch.float32).numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    if data is not None:
        d = data.detach().to("cpu", torch.float32).numpy()
        ax.scatter(d[:, 0], d[:, 1], s=3, alpha=0.3, c="#999999", label="data")
    ax.scatter(s[:, 0], s[:, 1], s=3, alpha=0.6, c="#1f5fbf", label="samples")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
