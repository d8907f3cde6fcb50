"""Samples from a trained flow, written in the format the output's name asks for.

``flowdsl sample RUN|CKPT --n 64 --temperature 0.7 -o grid.png`` loads the best checkpoint of a
run (or the given file) — its spec text comes from the checkpoint, so no spec file is needed —
draws n samples at the temperature and writes, by the suffix of ``-o``:

* ``.npy``: the raw samples, float32 array (n, *input_shape) on the model's scale ([0, 1) for
  images, real for vectors), NaN and Inf left as they are;
* ``.npz``: ``x`` as above, ``log_prob`` (n,) float32 (log p(x) in nats under the model),
  ``temperature`` and ``step`` (conditional runs: ``context``, each sample's, and log p(x | c));
* ``.png``: image specs, a grid of the samples quantised back to the data's levels
  (``floor(x·levels)``), upscaled with nearest-neighbour so each cell is at least 64 pixels
  wide; vector specs, a scatter plot of the first two coordinates over the training data;
* ``.svg`` / ``.pdf``: the same picture as a vector figure (matplotlib);

and refuses any other name (:data:`SAMPLE_FORMATS`) before it loads anything. The output path
goes through :mod:`flowdsl.outputs` (atomic; devices, FIFOs and folders are refused).

Conditional runs (a spec with ``context``) draw with ``--context VALUE`` or ``--context-file FILE``,
or by default one row per class (labels) or per test context (:mod:`.sample_context`).

Samples are drawn in chunks of at most :data:`SAMPLE_CHUNK` (and ``LIMITS.max_batch``), so the
activations' memory is bounded whatever n is; n itself is at most ``LIMITS.max_samples``. The
temperature must be finite and ≥ 0, and a checkpoint with non-finite weights is refused.
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

__all__ = [
    "SAMPLE_FORMATS",
    "SAMPLE_CHUNK",
    "check_temperature",
    "draw_samples",
    "image_grid",
    "save_image_grid",
    "save_scatter",
    "write_samples",
    "sample_grid",
]

#: the suffixes ``-o`` of ``flowdsl sample`` may have (raw arrays, a raster picture, vector figures)
SAMPLE_FORMATS = (".npy", ".npz", ".png", ".svg", ".pdf")
#: most samples drawn by one call of ``model.sample`` (also bounded by ``LIMITS.max_batch``)
SAMPLE_CHUNK = 1024


def _seed_for(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") & ((1 << 63) - 1)


def check_temperature(temperature: float) -> float:
    """``temperature`` as a float; raises :class:`FlowDSLError` unless it is finite and ≥ 0."""
    from flowdsl.errors import FlowDSLError

    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise FlowDSLError(f"the temperature must be a number, got {temperature!r}", filename="sample") from None
    if not math.isfinite(t) or t < 0:
        raise FlowDSLError(f"the temperature must be finite and at least 0, got {t!r}", filename="sample")
    return t


def _chunk_size(chunk: Optional[int]) -> int:
    from flowdsl.compiler.limits import LIMITS

    return max(1, min(int(chunk or SAMPLE_CHUNK), int(LIMITS.max_batch)))


@torch.no_grad()
def draw_samples(
    model: nn.Module,
    n: int,
    temperature: float = 1.0,
    seed: int = 0,
    dist_info: Any = None,
    *,
    chunk: Optional[int] = None,
    with_log_prob: bool = False,
    context: Optional[Tensor] = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """``n`` samples (n, *input_shape), float32 on the CPU, on the [0, 1) scale (images) or real
    (vectors); with ``with_log_prob`` also their log p(x) (n,) in nats. A conditional flow needs
    ``context``: (n, *context_shape), sample i drawn from p(x | context[i]) (its log p(x | c)).

    Drawn in chunks of at most ``chunk`` (default :data:`SAMPLE_CHUNK`, never above
    ``LIMITS.max_batch``) into one preallocated array, so memory beyond the result is bounded.
    Every process draws its shard from the global RNG forked and seeded with (seed, rank), so
    the caller's random state is left untouched; for ``n`` ≤ chunk the stream is the one of a
    single ``model.sample(n)``. Non-finite samples are kept as they are.

    Raises:
        FlowDSLError: ``temperature`` not finite or negative.
        ResourceLimitError: ``n`` above ``LIMITS.max_samples`` or below 1.
    """
    from flowdsl.compiler.limits import LIMITS
    from flowdsl.errors import ResourceLimitError
    from flowdsl.runtime.training.distributed import DistInfo, all_gather_cat
    from flowdsl.runtime.training.evaluation import model_device

    temperature = check_temperature(temperature)
    n = int(n)
    if n < 1 or n > LIMITS.max_samples:
        raise ResourceLimitError(
            f"the number of samples must be between 1 and {LIMITS.max_samples:,} (LIMITS.max_samples), got {n:,}",
            filename="sample",
        )
    info = dist_info or DistInfo()
    per = -(-n // info.world)
    ctx = _shard_contexts(context, n, per, info.rank) if context is not None else None
    step = _chunk_size(chunk)
    shape = tuple(model.input_shape)
    x = torch.empty((per, *shape), dtype=torch.float32)
    lp = torch.empty((per,), dtype=torch.float32) if with_log_prob else None
    was_training = model.training
    model.eval()
    dev = model_device(model)
    try:  # the generator of the model's device is forked too (CUDA: its own stream of numbers)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(_seed_for("sample", seed, info.rank))
            for i in range(0, per, step):
                k = min(step, per - i)
                if ctx is None:
                    xi = model.sample(k, temperature=temperature)
                else:
                    ci = ctx[i : i + k].to(dev)
                    xi = model.sample(k, temperature=temperature, context=ci)
                x[i : i + k] = xi.to(device="cpu", dtype=torch.float32)
                if lp is not None:
                    lpi = model.log_prob(xi) if ctx is None else model.log_prob(xi, context=ci)
                    lp[i : i + k] = lpi.to(device="cpu", dtype=torch.float32)
    finally:
        model.train(was_training)
    if info.active:  # gathered on the model's device (NCCL gathers CUDA tensors only), kept on the CPU
        ref = next(iter(model.parameters()), None)
        dev = ref.device if ref is not None else torch.device("cpu")
        x = all_gather_cat(x.to(dev), info).cpu()
        lp = all_gather_cat(lp.to(dev), info).cpu() if lp is not None else None
    x = x[:n]
    return x if lp is None else (x, lp[:n])


def _shard_contexts(context: Tensor, n: int, per: int, rank: int) -> Tensor:
    """This process's ``per`` contexts (samples ``rank·per …``); the last shard is padded with the
    last context (those samples are dropped after the gather)."""
    from flowdsl.errors import FlowDSLError

    if len(context) != n:
        raise FlowDSLError(f"{len(context)} contexts for {n} samples: give one context per sample", filename="sample")
    part = context[rank * per : (rank + 1) * per]
    if len(part) < per:
        part = torch.cat([part, context[-1:].expand(per - len(part), *context.shape[1:])])
    return part


def image_grid(
    x01: Tensor, levels: Optional[int], min_cell: int = 64, pad: int = 2, cols: Optional[int] = None
) -> np.ndarray:
    """(n, C, H, W) samples on [0, 1) → uint8 grid image (H', W') or (H', W', 3); ``cols``
    samples per row (default: a square grid)."""
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
    cols = max(1, int(cols)) if cols else max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    shape = (rows * (ch + pad) + pad, cols * (cw + pad) + pad) + ((3,) if c == 3 else ())
    grid = np.full(shape, 160, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y0, x0 = pad + r * (ch + pad), pad + q * (cw + pad)
        grid[y0 : y0 + ch, x0 : x0 + cw] = img[i]
    return grid


def _finite_for_picture(x: Tensor) -> Tensor:
    return torch.nan_to_num(x.detach().float().cpu(), nan=0.0, posinf=1e6, neginf=-1e6)


def save_image_grid(
    x01: Tensor, levels: Optional[int], path: str | os.PathLike, fmt: str = ".png", cols: Optional[int] = None
) -> None:
    """The grid of :func:`image_grid` as a PNG (``fmt=".png"``) or inside an SVG/PDF figure."""
    from flowdsl.outputs import atomic_write

    grid = image_grid(_finite_for_picture(x01), levels, cols=cols)
    if fmt == ".png":
        from PIL import Image

        im = Image.fromarray(grid, mode="RGB" if grid.ndim == 3 else "L")
        atomic_write(path, lambda f: im.save(f, format="PNG"), what="samples")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = grid.shape[:2]
    fig = plt.figure(figsize=(max(1.0, w / 100), max(1.0, h / 100)), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grid, cmap=None if grid.ndim == 3 else "gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format=fmt[1:]), what="samples")
    finally:
        plt.close(fig)


def save_scatter(
    samples: Tensor, path: str | os.PathLike, data: Optional[Tensor] = None, title: str = "", fmt: str = ".png"
) -> None:
    """A scatter plot of the first two coordinates (a histogram in 1-D) over ``data``, as
    ``fmt`` (``.png``, ``.svg`` or ``.pdf``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowdsl.outputs import atomic_write

    s = _finite_for_picture(samples).numpy()
    s = s.reshape(len(s), -1)
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
    try:
        atomic_write(path, lambda f: fig.savefig(f, format=fmt[1:]), what="samples")
    finally:
        plt.close(fig)


def write_samples(
    x: Tensor,
    path: str | os.PathLike,
    levels: Optional[int],
    image: bool,
    data: Optional[Tensor] = None,
    title: str = "",
    log_prob: Optional[Tensor] = None,
    extra: Optional[dict[str, Any]] = None,
    cols: Optional[int] = None,
) -> None:
    """Write samples ``x`` in the format of ``path``'s suffix (:data:`SAMPLE_FORMATS`): raw
    arrays (``.npy``; ``.npz`` with ``log_prob`` and ``extra`` scalars), or the picture — an image
    grid (images) or a scatter plot (vectors) — as ``.png``, ``.svg`` or ``.pdf``.

    Raises:
        OutputError: another suffix, or a path that must not be written (see :mod:`flowdsl.outputs`).
    """
    from flowdsl.outputs import atomic_write, check_output_format

    fmt = check_output_format(path, SAMPLE_FORMATS, what="samples")
    if fmt == ".npy":
        arr = x.detach().float().cpu().numpy()
        atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False), what="samples")
    elif fmt == ".npz":
        arrays = {"x": x.detach().float().cpu().numpy()}
        if log_prob is not None:
            arrays["log_prob"] = log_prob.detach().float().cpu().numpy()
        for k, v in (extra or {}).items():
            arrays[k] = np.asarray(v)
        atomic_write(path, lambda f: np.savez(f, **arrays), what="samples")
    elif image:
        save_image_grid(x, levels, path, fmt, cols=cols)
    else:
        save_scatter(x, path, data=data, title=title, fmt=fmt)


def sample_grid(
    ckpt_or_run: str | os.PathLike,
    n: int = 64,
    temperature: float = 0.7,
    out_png: str | os.PathLike = "grid.png",
    seed: int = 0,
    data: Optional[str] = None,
    factory: Any = None,
    device: str | torch.device = "auto",
    context: Optional[str] = None,
    context_file: Optional[str | os.PathLike] = None,
) -> dict[str, Any]:
    """Load a run folder or checkpoint, draw ``n`` samples and write them to ``out_png`` in the
    format of its suffix (see the module docstring; a bad name is refused before loading).

    A conditional run draws with ``context`` (``--context``: a class, or comma-separated numbers),
    ``context_file`` (``--context-file``), or by default one row per class (labels) or the contexts
    of the first test examples (:mod:`.sample_context`); then ``n`` is rounded up to fill the rows,
    and ``.npz`` files also hold each sample's ``context``.

    Vector flows are drawn over their training data (``data`` overrides the name stored in the
    run's settings; pass ``"none"`` to leave it out). Under torchrun the sampling is sharded and
    rank 0 writes the file. ``device``: where the model samples (``auto``, ``cpu``, ``cuda[:N]``;
    under torchrun ``cuda:$LOCAL_RANK``). The samples are drawn from the global generator of that
    device, so the same seed gives other samples on CUDA than on the CPU.
    Returns ``{"path", "n", "temperature", "step", "spec", "nonfinite", "contexts"}``
    (``nonfinite``: samples with a NaN or Inf entry; ``contexts``: how a conditional run's
    contexts were chosen, None for unconditional runs).

    Raises:
        OutputError: a suffix not in :data:`SAMPLE_FORMATS`, or a path that must not be written.
        CheckpointError: unreadable checkpoint, or weights with NaN/Inf.
        FlowDSLError: temperature not finite or negative, n out of range.
    """
    from flowdsl.outputs import check_output_format, check_output_path
    from flowdsl.runtime.training.device import resolve_device
    from flowdsl.runtime.training.distributed import init_from_env, shutdown
    from flowdsl.runtime.training.models import check_finite_weights, load_model
    from flowdsl.runtime.training.sample_context import sample_contexts

    fmt = check_output_format(out_png, SAMPLE_FORMATS, what="samples")
    check_output_path(out_png, what="samples")
    temperature = check_temperature(temperature)
    info = init_from_env(resolve_device(str(device)))
    try:
        spec, model, ckpt = load_model(ckpt_or_run, factory=factory, device=info.device)
        check_finite_weights(model, ckpt.get("path", ckpt_or_run), "sampling")

        def test_contexts():
            from flowdsl.runtime.data import load_for_spec

            cfg = ckpt.get("config") or {}
            name = data if data and data != "none" else cfg.get("data") or getattr(spec.train, "data", None)
            return load_for_spec(spec, name, "test", seed=int(cfg.get("seed", 0))).context

        contexts = sample_contexts(spec, int(n), context, context_file, test_contexts)
        ctx = None if contexts is None else contexts.per_sample
        n = int(n) if ctx is None else len(ctx)
        drawn = draw_samples(model, n, temperature, seed, info, with_log_prob=fmt == ".npz", context=ctx)
        x, lp = drawn if isinstance(drawn, tuple) else (drawn, None)
        nonfinite = int((~torch.isfinite(x.reshape(len(x), -1))).any(1).sum())
        image = getattr(spec.input, "kind", "image") == "image"
        levels = getattr(spec.input, "levels", None) if image else None
        data_x = None
        if not image and fmt in (".png", ".svg", ".pdf"):
            name = data or (ckpt.get("config") or {}).get("data") or getattr(spec.train, "data", None)
            if name and name != "none":
                from flowdsl.runtime.data import load_for_spec

                data_x = load_for_spec(spec, name, "train", seed=int((ckpt.get("config") or {}).get("seed", 0))).x[
                    :5000
                ]
        if info.main:
            write_samples(
                x,
                out_png,
                levels,
                image,
                data=data_x,
                title=f"{getattr(spec, 'name', '')} T={temperature:g}" + (contexts.title if contexts else ""),
                log_prob=lp,
                extra={"temperature": temperature, "step": int(ckpt["step"])}
                | ({"context": ctx.cpu().numpy()} if ctx is not None else {}),
                cols=contexts.cols if contexts else None,
            )
    finally:
        shutdown(info)
    return {
        "path": str(out_png),
        "n": int(n),
        "temperature": float(temperature),
        "step": int(ckpt["step"]),
        "spec": getattr(spec, "name", ""),
        "nonfinite": nonfinite,
        "contexts": contexts.title.strip() if contexts else None,
    }
