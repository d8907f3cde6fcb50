"""Acceptance section of ``flowdsl bench``: the fusion speed targets on ``glow_cifar``, with their floor.

Targets (batch 64, float32, CPU): fused eager log_prob ≥ 1.5× faster than unfused eager, and
fused + ``torch.compile`` ≥ 1.5× faster than normflows on the same architecture, for log_prob
and for sampling. One fresh process per thread count runs every variant round by round; then
the unfused model takes one training step and the same rounds run again. The two states differ
in the allocator: in a fresh process glibc returns large freed blocks to the OS, so every large
temporary costs page faults on its next use; after a training step's peak the heap keeps them
("steady state"). Both are reported; a target counts as met only when it holds in both.

The floor. Fusion removes work *around* the coupling conditioners (weight-only recomputation,
element-wise passes, layout changes); it cannot make their convolutions cheaper (they already
run as oneDNN convolution+ReLU with prepacked weights). So the probe also times the fused
model's conditioner programs alone, on the very inputs they receive in one call ("conditioner
convolutions alone"), in the same rounds. ``unfused eager ÷ convolutions alone`` is then the
largest eager speed-up that any fusion of the remaining work could reach in that state: when it
is below the target, the eager target is out of reach of fusion on this machine and thread count.

The kernels under the floor. :func:`conv_kernels` lists the distinct conditioner convolutions of
one call (shape, how often they run), and times each with oneDNN as the fused model runs it
(prepacked weights, channels-last, ReLU fused) and with NNPACK's fast algorithms (Winograd/FFT
tiles, ``torch._nnpack_spatial_convolution`` on NCHW input, then a separate ReLU where the
convolution has one), next to a matrix-multiply peak measured in the
same process: it shows how close the floor's convolutions are to the machine, and whether the
fast-convolution library that ships in PyTorch would lower it.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from flowdsl.runtime.bench.report import _times_table
from flowdsl.runtime.bench.timing import SpecResult, _ms, _ratio

__all__ = ["TARGET", "FLOOR", "conditioner_floor", "conv_kernels", "kernel_table", "acceptance"]

TARGET = 1.5  # acceptance: fused eager vs unfused eager, fused + compile vs normflows
FLOOR = "conditioner convolutions alone"


def _program_inputs(fused: torch.nn.Module, call: Callable[[], Any]) -> list[tuple[torch.nn.Module, torch.Tensor]]:
    """(conditioner program, a copy of its input) for every ConvProgram run during one ``call``
    of ``fused``, in call order (captured with forward pre-hooks)."""
    from flowdsl.runtime.fusion.ops.conv_program import ConvProgram

    captured: list[tuple[torch.nn.Module, torch.Tensor]] = []

    def grab(mod, args):
        captured.append((mod, args[0].detach().clone()))

    hooks = [m.register_forward_pre_hook(grab) for m in fused.modules() if isinstance(m, ConvProgram)]
    try:
        with torch.no_grad():
            call()
    finally:
        for h in hooks:
            h.remove()
    return captured


def conditioner_floor(fused: torch.nn.Module, call: Callable[[], Any]) -> Callable[[], None] | None:
    """A function that runs only the conditioner programs of ``fused`` on the inputs one ``call``
    gives them, or None when the model has none."""
    captured = _program_inputs(fused, call)
    if not captured:
        return None

    def run() -> None:
        for mod, x in captured:
            mod(x)

    return run


def conv_kernels(fused: torch.nn.Module, call: Callable[[], Any], threads: int, repeats: int = 20) -> dict:
    """The conditioner convolutions of one ``call`` of ``fused``, grouped by shape, each timed with
    oneDNN (as the fused model runs it) and NNPACK (when PyTorch has it), plus the matmul peak.

    Returns ``{"peak_gflops", "threads", "batch", "rows": [{"shape", "calls", "gflop", "onednn",
    "nnpack"}]}`` with times as lists of seconds per round (``alternate``)."""
    from flowdsl.runtime.bench.timing import alternate, matmul_peak
    from flowdsl.runtime.fusion.ops.kernels import PackedWeights, conv_act

    shapes: dict[tuple[int, ...], int] = {}
    for mod, inp in _program_inputs(fused, call):
        b, _, h, w = inp.shape
        for op in mod.program:
            if op[0] == "conv":
                weight = getattr(mod, f"w{op[1]}")
                key = (b, int(weight.shape[1]), h, w, int(weight.shape[0]), int(weight.shape[-1]), op[2], op[3])
                shapes[key] = shapes.get(key, 0) + 1
    nnpack = torch.backends.nnpack.is_available()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for (b, c_in, h, w, c_out, k, pad, act), n in shapes.items():
        x = torch.randn(b, c_in, h, w, generator=gen)
        wt = torch.randn(c_out, c_in, k, k, generator=gen) / (c_in * k * k) ** 0.5
        bias = torch.randn(c_out, generator=gen)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        packed = PackedWeights()

        def nnpack_conv():  # timed right below, in this iteration
            y = torch._nnpack_spatial_convolution(x, wt, bias, [pad, pad], [1, 1])
            return torch.relu(y) if act == "relu" else y

        fns: dict[str, Callable[[], Any]] = {"onednn": lambda: conv_act(x_cl, wt, bias, pad, act, packed, 0)}
        if nnpack:
            fns["nnpack"] = nnpack_conv
        times = alternate(fns, repeats)
        rows.append(
            {
                "shape": f"{c_in}→{c_out}, {k}×{k}, {h}×{w}",
                "calls": n,
                "gflop": 2 * b * h * w * c_out * c_in * k * k / 1e9,
                "onednn": times["onednn"],
                "nnpack": times.get("nnpack"),
            }
        )
    batch = next(iter(shapes))[0] if shapes else 0
    return {"peak_gflops": matmul_peak(threads)[0], "threads": threads, "batch": batch, "rows": rows}


def kernel_table(kern: dict) -> list[str]:
    """The markdown rows of :func:`conv_kernels`' result (medians; totals weighted by calls)."""
    import statistics as st

    if not kern or not kern.get("rows"):
        return []
    peak = kern["peak_gflops"]
    out = [
        f"The floor's convolutions, one kernel at a time (batch {kern['batch']}, steady state, "
        f"{kern['threads']} thread(s); "
        f"matrix-multiply peak in the same process: {peak:.0f} GFLOP/s):",
        "",
        "| convolution (in→out, kernel, image) | calls per log_prob | oneDNN (ms) | oneDNN GFLOP/s | "
        "of the matmul peak | "
        "NNPACK Winograd/FFT (ms) | NNPACK ÷ oneDNN |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    tot_o = tot_n = 0.0
    for r in kern["rows"]:
        o = st.median(r["onednn"])
        tot_o += o * r["calls"]
        rate = r["gflop"] / o
        if r["nnpack"]:
            nn = st.median(r["nnpack"])
            tot_n += nn * r["calls"]
            ncell, rcell = f"{nn * 1e3:.3f}", f"{nn / o:.2f}×"
        else:
            ncell = rcell = "not available"
        out.append(
            f"| {r['shape']} | {r['calls']} | {o * 1e3:.3f} | {rate:.0f} | {rate / peak:.0%} | {ncell} | {rcell} |"
        )
    ncell = f"{tot_n * 1e3:.1f}" if tot_n else "–"
    out.append(
        f"| **all, weighted by calls** | | **{tot_o * 1e3:.1f}** | | | **{ncell}** | "
        f"{f'{tot_n / tot_o:.2f}×' if tot_n else '–'} |"
    )
    return out


def _met(oks: list[bool]) -> str:
    if not oks:
        return "–"
    if all(oks):
        return "yes"
    if not any(oks):
        return "**NO**"
    return "fresh process only" if oks[0] else "steady state only"


def _floor_rows(states: list[tuple[str, dict]]) -> list[str]:
    rows = [
        "| state | direction | unfused eager (ms) | fused eager (ms) | " + FLOOR + " (ms) | "
        "largest possible fused-eager speed-up: unfused ÷ convolutions | fused eager ÷ convolutions |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, times in states:
        for d in ("log_prob", "sample"):
            t = times.get(d, {})
            if FLOOR not in t or "unfused eager" not in t or "fused eager" not in t:
                continue
            _, bound, _ = _ratio(t["unfused eager"], t[FLOOR])
            _, over, _ = _ratio(t["fused eager"], t[FLOOR])
            rows.append(
                f"| {name} | {d} | {_ms(t['unfused eager'])} | {_ms(t['fused eager'])} | {_ms(t[FLOOR])} | "
                f"{bound:.2f}× | {over:.2f}× |"
            )
    return rows if len(rows) > 2 else []


def acceptance(r: SpecResult) -> str:
    """The acceptance table of one probe (see the module docstring)."""
    lines = [f"`{r.name}`, batch 64, {r.threads} thread(s), one process; target: each ratio ≥ {TARGET}×.", ""]
    states = [("fresh process", r.times)] + ([("steady state (after one training step)", r.warm)] if r.warm else [])
    lines += [
        "| target | direction | " + " | ".join(f"{name}: ratio (median [IQR])" for name, _ in states) + " | met? |",
        "|---|---|" + "---:|" * len(states) + "---|",
    ]
    for label, slow, fast in (
        ("fused eager vs unfused eager", "unfused eager", "fused eager"),
        ("fused + compile vs normflows", "normflows", "fused + compile"),
    ):
        for d in ("log_prob", "sample"):
            cells, oks = [], []
            for _, times in states:
                t = times[d]
                if slow in t and fast in t:
                    lo, med, hi = _ratio(t[slow], t[fast])
                    cells.append(f"{med:.2f}× [{lo:.2f}–{hi:.2f}]")
                    oks.append(med >= TARGET)
                else:
                    cells.append("not measured")
            lines.append(f"| {label} | {d} | " + " | ".join(cells) + f" | {_met(oks)} |")
    floor = _floor_rows(states)
    if floor:
        lines += [
            "",
            "The floor of the eager target: the conditioners' convolutions alone, timed in the same rounds "
            "(median of per-round ratios):",
            "",
            *floor,
        ]
    kern = kernel_table(r.kernels)
    if kern:
        lines += ["", *kern]
    for name, times in states:
        lines += [
            "",
            f"Times (ms, median [IQR]), {name}:",
            "",
            _times_table([SpecResult(r.name, times=times)]).rstrip("\n"),
        ]
    return "\n".join(lines) + "\n"
