"""Benchmarks of the invertible convolutions and butterflies, measured side by side.

    python -m flowdsl.runtime.bench.convs [--batch 64] [--shape 3,32,32] [--repeats 15] [--threads N]
                                          [--onnx] [--spec FILE] [-o FILE]

:func:`run` returns markdown tables (the lead wires it into ``flowdsl bench``):

1. forward and inverse time of each layer on (B, C, H, W) = (64, 3, 32, 32), float32, CPU,
   training form and frozen (inference) form, against a 1×1 conv of the same width (a channel
   matmul with W and W⁻¹ precomputed, and the ``conv1x1`` kind's frozen form);
2. the emerging inverse against a naive pixel-by-pixel back-substitution written here for the
   comparison (:func:`naive_emerging_inverse`: pixels one at a time in dependency order, the
   already solved neighbours subtracted by a window product, the channel triangle solved by a
   precomputed inverse of the centre tap — vectorised over the batch only);
3. sequential step counts of the emerging inverse for 8×8, 32×32 and 64×64;
4. optionally (``onnx=True``) the frozen layers exported and timed in onnxruntime;
5. optionally (``spec=...``) sampling vs log_prob time of a compiled flow.

Times are the best of ``repeats`` runs after warm-up (CPU time of the process, see :func:`timeit`),
in milliseconds, under ``torch.no_grad``.
"""

from __future__ import annotations

import math
import platform
import time
from typing import Callable

import torch
import torch.nn.functional as F

from flowdsl.compiler.kinds import get_layer
from flowdsl.runtime.layers.butterfly import Butterfly, max_depth
from flowdsl.runtime.layers.emerging_conv import EmergingConv
from flowdsl.runtime.layers.periodic_conv import PeriodicConv

__all__ = ["run", "naive_emerging_inverse", "timeit", "main"]


def timeit(fn: Callable[[], object], repeats: int = 15, warmup: int = 2) -> float:
    """Best-of-``repeats`` CPU time of the process for ``fn``, in milliseconds.

    CPU time (not wall time) and the best run, because the benchmark machine is shared: wall
    times there mostly measure the other processes. With one intra-op thread (``--threads 1``,
    the setting of benchmarks/convs.md) CPU time equals the compute time of the call.
    """
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        ts = []
        for _ in range(repeats):
            t0 = time.process_time()
            fn()
            ts.append(time.process_time() - t0)
    return min(ts) * 1e3


class _MatmulConv1x1(torch.nn.Module):
    """A 1×1 conv as a channel matmul with W and W⁻¹ precomputed: the fastest 1×1 on the CPU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        w = torch.linalg.qr(torch.randn(c, c, dtype=torch.float64))[0]
        self.register_buffer("w", w.float())
        self.register_buffer("w_inv", torch.linalg.inv(w).float())

    @staticmethod
    def _apply(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (w @ x.reshape(x.shape[0], x.shape[1], -1)).reshape(x.shape)

    def forward(self, x):
        return self._apply(self.w, x), x.new_zeros(x.shape[0])

    def inverse(self, y):
        return self._apply(self.w_inv, y)


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
    out: list[tuple[str, torch.nn.Module]] = [
        ("1×1 conv as a channel matmul, W⁻¹ precomputed — **reference**", _MatmulConv1x1(C)),
        ("conv1x1(param=lu) (the kind; frozen: conv2d with W, W⁻¹)", conv1x1.build(conv1x1.Args(), shape)),
        ("conv(kind=emerging, kernel=3)", EmergingConv(shape, 3)),
        ("conv(kind=emerging, kernel=3), tile=(8, 8)", EmergingConv(shape, 3, tile=(min(8, H), min(8, W)))),
        ("conv(kind=periodic, kernel=3)", PeriodicConv(shape, 3)),
        (f"butterfly(over=all), depth {max_depth(C * H * W)}", Butterfly(shape, max_depth(C * H * W), "all")),
    ]
    if max_depth(W) > 0:
        out.append((f"butterfly(over=width), depth {max_depth(W)}", Butterfly(shape, max_depth(W), "width")))
    if max_depth(C) > 0:
        out.append((f"butterfly(over=channels), depth {max_depth(C)}", Butterfly(shape, max_depth(C), "channels")))
    for _, m in out:
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return out


def run(
    batch: int = 64,
    shape: tuple[int, int, int] = (3, 32, 32),
    repeats: int = 15,
    naive: bool = True,
    spec: str | None = None,
    report: Callable[[str], None] | None = None,
    onnx: bool = False,
) -> str:
    """Measure everything; return (and pass each finished section to ``report``) markdown."""
    say = report or (lambda s: None)
    C, H, W = shape
    sections: list[str] = []
    head = (
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} intra-op thread(s); "
        f"float32, batch {batch}, input {C}×{H}×{W}; best of {repeats} runs, CPU time of the process, ms."
    )
    sections.append(head)
    say(head)

    x = torch.rand(batch, C, H, W)
    rows = []
    base_f = base_i = None
    emerging = None
    conv3 = torch.randn(C, C, 3, 3)
    t_conv3 = timeit(lambda: F.conv2d(x, conv3, padding=1), repeats)
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
            if emerging is None:
                emerging = (layer, fz, y)
            s = layer.steps()
            steps = f"{s['steps']} (tiles {s['tile'][0]}×{s['tile'][1]})"
        with torch.no_grad():
            err = float((fz.inverse(y) - x).abs().max())
        rows.append(
            f"| {name} | {tf:.2f} | {ti:.2f} | {ff:.2f} | {fi:.2f} | {ff / base_f:.1f}× | {fi / base_i:.1f}× | "
            f"{steps} | {err:.1e} |"
        )
    t1 = "\n".join(
        [
            "### Forward and inverse vs a 1×1 conv of the same width",
            "",
            "Training form (`train`, parameters → weights on every call; the emerging inverse caches its",
            "tile operators while the weights do not change) and inference form (`frozen()`).",
            "Ratios: frozen time over the reference 1×1 conv (first row).",
            "",
            "| layer | train fwd | train inv | frozen fwd | frozen inv | fwd / 1×1 | inv / 1×1 | "
            "sequential steps (inverse) | max abs round-trip error |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|",
            *rows,
            "",
            f"For scale: a plain (not invertible) 3×3 `conv2d` {C}→{C} with zero padding takes {t_conv3:.2f} ms.",
        ]
    )
    sections.append(t1)
    say(t1)

    if naive and emerging is not None:
        layer, fz, y = emerging
        reps = max(3, repeats // 5)
        tn = timeit(lambda: naive_emerging_inverse(layer, y), reps, warmup=1)
        fi = timeit(lambda: fz.inverse(y), repeats)

        def uncached():
            layer._op_cache = None
            return layer.inverse(y)

        tu = timeit(uncached, repeats)
        big = EmergingConv(shape, 3, tile=(min(8, H), min(8, W)))
        big.load_state_dict(layer.state_dict())
        fb = big.frozen()
        tb = timeit(lambda: fb.inverse(y), repeats)
        with torch.no_grad():
            dn = float((naive_emerging_inverse(layer, y) - fz.inverse(y)).abs().max())
        s, sb = layer.steps(), big.steps()
        t2 = "\n".join(
            [
                "### Emerging inverse vs a naive pixel-by-pixel back-substitution",
                "",
                "| method | sequential steps | time (ms) | naive ÷ this |",
                "|---|---:|---:|---:|",
                f"| naive pixel-by-pixel (`bench_convs.naive_emerging_inverse`) | {2 * H * W} | {tn:.1f} | 1.0× |",
                f"| tiled wavefront, frozen form, tiles {s['tile'][0]}×{s['tile'][1]} (default) | {s['steps']} | "
                f"{fi:.2f} | {tn / fi:.0f}× |",
                f"| tiled wavefront, frozen form, tiles {sb['tile'][0]}×{sb['tile'][1]} | {sb['steps']} | "
                f"{tb:.2f} | {tn / tb:.0f}× |",
                f"| tiled wavefront, training form, operators recomputed (float64 D⁻¹) | {s['steps']} | "
                f"{tu:.2f} | {tn / tu:.0f}× |",
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
            srows.append(
                f"| {c}×{s}×{s} | {st['tile'][0]}×{st['tile'][1]} | {st['levels_per_conv'][0]} | {st['steps']} | "
                f"{st['pixel_wavefront_steps']} | {2 * s * s} |"
            )
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

    if onnx:
        t5 = onnx_times(shape, batch, repeats)
        sections.append(t5)
        say(t5)

    if spec is not None:
        t4 = sample_vs_log_prob(spec, batch, max(5, repeats // 3))
        sections.append(t4)
        say(t4)
    return "\n\n".join(sections) + "\n"


class _Direction(torch.nn.Module):
    def __init__(self, layer: torch.nn.Module, inverse: bool) -> None:
        super().__init__()
        self.layer, self.inv = layer, inverse

    def forward(self, x):
        return self.layer.inverse(x) if self.inv else self.layer(x)[0]


def onnx_times(shape: tuple[int, int, int], batch: int = 64, repeats: int = 15) -> str:
    """Frozen layers exported (TorchScript exporter, opset 18, dynamic batch) and run in
    onnxruntime (1 intra-op thread), against the same frozen module in eager PyTorch."""
    import os
    import tempfile
    import warnings

    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    x = torch.rand(batch, *shape)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, layer in _layers(shape):
            if "reference" in name or name.startswith("conv1x1"):
                continue
            fz = layer.frozen().eval()
            with torch.no_grad():
                y = fz(x)[0]
            cells = []
            for inverse, inp in ((False, x), (True, y)):
                mod = _Direction(fz, inverse).eval()
                path = os.path.join(d, "m.onnx")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter()
                    torch.onnx.export(
                        mod,
                        (inp[:4],),
                        path,
                        dynamo=False,
                        opset_version=18,
                        input_names=["x"],
                        output_names=["y"],
                        dynamic_axes={"x": {0: "b"}, "y": {0: "b"}},
                    )
                    t_exp = time.perf_counter() - t0
                sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
                feed = {"x": inp.numpy()}
                t_ort = timeit(lambda: sess.run(None, feed), repeats)
                t_eager = timeit(lambda: mod(inp), repeats)
                with torch.no_grad():
                    err = float(np.abs(sess.run(None, feed)[0] - mod(inp).numpy()).max())
                cells += [f"{t_eager:.2f}", f"{t_ort:.2f}", f"{t_exp:.1f}", f"{err:.0e}"]
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(
        [
            "### Frozen layers in onnxruntime (TorchScript exporter, opset 18, dynamic batch, 1 thread)",
            "",
            "| layer | fwd eager | fwd ORT | fwd export (s) | fwd max abs diff | "
            "inv eager | inv ORT | inv export (s) | inv max abs diff |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )


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
    from flowdsl.cliargs import FlowArgumentParser, batch_size, positive_int, thread_count

    ap = FlowArgumentParser(prog="python -m flowdsl.runtime.bench.convs", description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=batch_size, default=64, help="batch size (default 64)")
    ap.add_argument("--shape", default="3,32,32", help="C,H,W")
    ap.add_argument("--repeats", type=positive_int(10_000), default=15, help="timed rounds (default 15)")
    ap.add_argument("--threads", type=thread_count, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-naive", action="store_true", help="leave out the naive reference layers")
    ap.add_argument("--spec", default=None, help="also time sample vs log_prob of this spec")
    ap.add_argument("--onnx", action="store_true", help="also time the frozen layers in onnxruntime")
    ap.add_argument("-o", "--out", default=None, help="write the markdown here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    shape = tuple(int(v) for v in a.shape.split(","))
    assert len(shape) == 3 and math.prod(shape) > 0
    text = run(
        a.batch, shape, a.repeats, not a.no_naive, a.spec, report=lambda s: print(s + "\n", flush=True), onnx=a.onnx
    )
    if a.out:
        from flowdsl.outputs import atomic_write_text

        atomic_write_text(a.out, text, what="benchmark report")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
