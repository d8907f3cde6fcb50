"""Benchmarks of the invertible convolutions and butterflies (issue 3), measured side by side.

    python -m flowdsl.runtime.bench_convs [--batch 64] [--shape 3,32,32] [--repeats 15] [-o FILE]

:func:`run` returns markdown tables (the lead wires it into ``flowdsl bench``):

1. forward and inverse time of each layer on (B, C, H, W) = (64, 3, 32, 32), float32, CPU,
   training form and frozen (inference) form, against a 1×1 conv of the same width (the
   ``conv1x1`` kind, frozen: W and W⁻¹ precomputed);
2. the emerging inverse against a naive pixel-by-pixel back-substitution written here for the
   comparison (:func:`naive_emerging_inverse`: pixels one at a time in dependency order, the
   already solved neighbours subtracted by a window product, the channel triangle solved by a
   precomputed inverse of the centre tap — vectorised over the batch only);
3. sequential step counts of the emerging inverse for 8×8, 32×32 and 64×64;
4. optionally (``spec=...``) sampling vs log_prob time of a compiled flow.

Times are the best of ``repeats`` runs after warm-up, in milliseconds, under ``torch.no_grad``.
"""
from __future__ import annotations

import argparse
import math
import platform
import time
from typing import Callable

import torch
import torch.nn.functional as F

from flowdsl.compiler.registry import get_layer
from flowdsl.runtime.layers.butterfly import Butterfly, max_depth
from flowdsl.runtime.layers.emerging_conv import EmergingConv
from flowdsl.runtime.layers.periodic_conv import PeriodicConv

__all__ = ["run", "naive_emerging_inverse", "timeit", "main"]


def timeit(fn: Callable[[], object], repeats: int = 15, warmup: int = 2) -> float:
    """Best-of-``repeats`` wall time of ``fn`` in milliseconds (robust on a shared machine, where
    medians mostly measure the other processes)."""
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return min(ts) * 1e3


# --------------------------------------------------------------------------- the naive baseline
def _naive_solve(y: torch.Tensor, kernel: torch.Tensor, direction: str) -> torch.Tensor:
    """Pixel-by-pixel back-substitution of one quadrant AR conv (H·W sequential steps)."""
    B, C, H, W = y.shape
    q = kernel.shape[-1]
    c = q - 1
    centre_at = (0, 0) if direction == "br" else (c, c)
    centre = kernel[:, :, centre_at[0], centre_at[1]]
    cinv_t = torch.linalg.inv(centre.double()).to(y.dtype).t()
    off = kernel.clone()
    off[:, :, centre_at[0], centre_at[1]] = 0
    off = off.reshape(C, C * q * q).t()  # (C·q·q, C)
    pad = (0, c, 0, c) if direction == "br" else (c, 0, c, 0)
    xp = F.pad(torch.zeros_like(y), pad)
    rows = range(H - 1, -1, -1) if direction == "br" else range(H)
    cols = list(range(W - 1, -1, -1)) if direction == "br" else list(range(W))
    oi, oj = (0, 0) if direction == "br" else (c, c)  # position of pixel (i, j) inside its window
    for i in rows:
        for j in cols:
            win = xp[:, :, i : i + q, j : j + q].reshape(B, C * q * q)
            r = y[:, :, i, j] - win @ off
            xp[:, :, i + oi, j + oj] = r @ cinv_t
    return xp[:, :, oi : oi + H, oj : oj + W]


def naive_emerging_inverse(layer: EmergingConv, y: torch.Tensor) -> torch.Tensor:
    """The reference's algorithm (sequential over pixels) for an :class:`EmergingConv`."""
    k1, k2 = (k.to(y.dtype) for k in layer.kernels(torch.float64))
    y = y - layer.bias.to(y.dtype).view(1, -1, 1, 1)
    return _naive_solve(_naive_solve(y, k2, "tl"), k1, "br")


# --------------------------------------------------------------------------- the run
def _layers(shape: tuple[int, int, int]) -> list[tuple[str, torch.nn.Module]]:
    C, H, W = shape
    torch.manual_seed(0)
    conv1x1 = get_layer("conv1x1")
    ref = conv1x1.build(conv1x1.Args(), shape)
    out = [("conv1x1 (lu) — reference", ref)]
    out.append(("conv(kind=emerging, kernel=3)", EmergingConv(shape, 3)))
    out.append(("conv(kind=periodic, kernel=3)", PeriodicConv(shape, 3)))
    out.append((f"butterfly(over=all) depth {max_depth(C * H * W)}", Butterfly(shape, max_depth(C * H * W), "all")))
    if max_depth(W) > 0:
        out.append((f"butterfly(over=width) depth {max_depth(W)}", Butterfly(shape, max_depth(W), "width")))
    if max_depth(C) > 0:
        out.append((f"butterfly(over=channels) depth {max_depth(C)}", Butterfly(shape, max_depth(C), "channels")))
    for _, m in out:
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return out


def run(batch: int = 64, shape: tuple[int, int, int] = (3, 32, 32), repeats: int = 15, naive: bool = True,
        spec: str | None = None, report: Callable[[str], None] | None = None) -> str:
    """Measure everything; return (and pass each finished section to ``report``) markdown."""
    say = report or (lambda s: None)
    C, H, W = shape
    sections: list[str] = []
    head = (
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} thread(s); "
        f"float32, batch {batch}, input {C}×{H}×{W}; best of {repeats} runs, ms."
    )
    sections.append(head)
    say(head)

    x = torch.rand(batch, C, H, W)
    rows = []
    base_f = base_i = None
    emerging = None
    for name, layer in _layers(shape):
        layer.eval()
        fz = layer.frozen().eval()
        with torch.no_grad():
            y = layer(x)[0]
        tf = timeit(lambda: layer(x), repeats)
        ti = timeit(lambda: layer.inverse(y), repeats)
        ff = timeit(lambda: fz(x), repeats)
        fi = timeit(lambda: fz.inverse(y), repeats)
        if base_f is None:
            base_f, base_i = ff, fi
        steps = "1"
        if isinstance(layer, EmergingConv):
            emerging = (layer, fz, y)
            s = layer.steps()
            steps = f"{s['steps']} (tiles {s['tile'][0]}×{s['tile'][1]})"
        with torch.no_grad():
            err = float((fz.inverse(y) - x).abs().max())
        rows.append(f"| {name} | {tf:.2f} | {ti:.2f} | {ff:.2f} | {fi:.2f} | {ff / base_f:.1f}× | {fi / base_i:.1f}× | {steps} | {err:.1e} |")
    t1 = "\n".join(
        [
            "### Forward and inverse vs a 1×1 conv of the same width",
            "",
            "| layer | train fwd | train inv | frozen fwd | frozen inv | frozen fwd / 1×1 | frozen inv / 1×1 | sequential steps (inverse) | max abs round-trip error |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|",
            *rows,
        ]
    )
    sections.append(t1)
    say(t1)

    if naive and emerging is not None:
        layer, fz, y = emerging
        reps = max(3, repeats // 5)
        tn = timeit(lambda: naive_emerging_inverse(layer, y), reps, warmup=1)
        ti = timeit(lambda: layer.inverse(y), repeats)
        fi = timeit(lambda: fz.inverse(y), repeats)
        with torch.no_grad():
            dn = float((naive_emerging_inverse(layer, y) - fz.inverse(y)).abs().max())
        s = layer.steps()
        t2 = "\n".join(
            [
                "### Emerging inverse vs a naive pixel-by-pixel back-substitution",
                "",
                "| method | sequential steps | time (ms) | naive ÷ this |",
                "|---|---:|---:|---:|",
                f"| naive pixel-by-pixel (`bench_convs.naive_emerging_inverse`) | {2 * H * W} | {tn:.1f} | 1.0× |",
                f"| tiled wavefront, training form (D⁻¹ computed per call) | {s['steps']} | {ti:.2f} | {tn / ti:.0f}× |",
                f"| tiled wavefront, frozen form | {s['steps']} | {fi:.2f} | {tn / fi:.0f}× |",
                "",
                f"Largest difference between the naive and the tiled inverse: {dn:.1e}.",
            ]
        )
        sections.append(t2)
        say(t2)

    srows = []
    for c in sorted({C, 3, 12}):
        for s in (8, 16, 32, 64):
            e = EmergingConv((c, s, s), 3)
            st = e.steps()
            srows.append(f"| {c}×{s}×{s} | {st['tile'][0]}×{st['tile'][1]} | {st['levels_per_conv'][0]} | {st['steps']} | {st['pixel_wavefront_steps']} | {2 * s * s} |")
    t3 = "\n".join(
        [
            "### Sequential steps of the emerging inverse (kernel 3)",
            "",
            "| input | tile | levels per AR conv | emerging inverse (2 AR convs) | pixel wavefront | naive (pixels) |",
            "|---|---|---:|---:|---:|---:|",
            *srows,
        ]
    )
    sections.append(t3)
    say(t3)

    if spec is not None:
        t4 = sample_vs_log_prob(spec, batch, max(5, repeats // 3))
        sections.append(t4)
        say(t4)
    return "\n\n".join(sections) + "\n"


def sample_vs_log_prob(path: str, batch: int = 64, repeats: int = 5) -> str:
    """Sampling time vs log_prob time of a compiled spec (training form and fused form)."""
    import flowdsl

    torch.manual_seed(0)
    model = flowdsl.compile(flowdsl.load(path)).float()
    x = torch.rand(batch, *model.input_shape)
    model.train()
    with torch.no_grad():
        model(x)  # data-dependent init
    model.eval()
    rows = []
    for name, m in (("training form", model), ("fused (model.fuse())", model.fuse())):
        tl = timeit(lambda: m.log_prob(x), repeats)
        ts = timeit(lambda: m.sample(batch), repeats)
        rows.append(f"| {name} | {tl:.1f} | {ts:.1f} | {ts / tl:.2f}× |")
    return "\n".join(
        [
            f"### Sampling vs log_prob: `{path}` (batch {batch}, input {'×'.join(map(str, model.input_shape))})",
            "",
            "| model | log_prob (ms) | sample (ms) | sample ÷ log_prob |",
            "|---|---:|---:|---:|",
            *rows,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flowdsl.runtime.bench_convs", description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--shape", default="3,32,32", help="C,H,W")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument("--spec", default=None, help="also time sample vs log_prob of this spec")
    ap.add_argument("-o", "--out", default=None, help="write the markdown here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    shape = tuple(int(v) for v in a.shape.split(","))
    assert len(shape) == 3 and math.prod(shape) > 0
    text = run(a.batch, shape, a.repeats, not a.no_naive, a.spec, report=lambda s: print(s + "\n", flush=True))
    if a.out:
        with open(a.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
