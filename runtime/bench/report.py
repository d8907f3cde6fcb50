"""Report tables of ``flowdsl bench``: time per call, throughput, speed-ups, compilation and
agreement, FLOPs against the measured matrix-multiply peak (the "Fused inference modules"
section of BENCHMARKS.md)."""

from __future__ import annotations

import statistics as st

from flowdsl.runtime.bench.timing import SpecResult, _ms, _ratio

__all__ = ["VARIANTS", "fusion_report"]

VARIANTS = ("unfused eager", "fused eager", "fused + compile", "onnxruntime", "normflows")


def _speedup(times: dict[str, list[float]], slow: str, fast: str) -> str:
    if slow not in times or fast not in times:
        return "–"
    lo, med, hi = _ratio(times[slow], times[fast])
    return f"{med:.2f}× [{lo:.2f}–{hi:.2f}]"


def _times_table(results: list[SpecResult]) -> str:
    out = ["| spec | direction | " + " | ".join(VARIANTS) + " |", "|---|---|" + "---:|" * len(VARIANTS)]
    for r in results:
        for d, t in r.times.items():
            out.append(f"| {r.name} | {d} | " + " | ".join(_ms(t[v]) if v in t else "–" for v in VARIANTS) + " |")
    return "\n".join(out) + "\n"


def fusion_report(results: list[SpecResult], batch: int, repeats: int, peak: tuple[float, float]) -> str:
    out = [
        f"Times per call in ms at batch {batch}, float32: median [interquartile range] over {repeats} rounds; "
        "every round runs each variant once, so all variants see the same load. Speed-ups are the median "
        "[IQR] of the per-round ratios.",
        "",
    ]
    out += ["### Time per call (ms)", "", _times_table(results).rstrip("\n")]
    out += [
        "",
        "### Throughput (samples/s, from the medians)",
        "",
        "| spec | direction | " + " | ".join(VARIANTS) + " |",
        "|---|---|" + "---:|" * len(VARIANTS),
    ]
    for r in results:
        for d, t in r.times.items():
            out.append(
                f"| {r.name} | {d} | "
                + " | ".join(f"{batch / st.median(t[v]):,.0f}" if v in t else "–" for v in VARIANTS)
                + " |"
            )
    out += [
        "",
        "### Speed-ups",
        "",
        "| spec | direction | fused eager vs unfused eager | fused + compile vs fused eager | "
        "fused + compile vs normflows | fused eager vs normflows | onnxruntime vs fused eager |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for d, t in r.times.items():
            out.append(
                f"| {r.name} | {d} | {_speedup(t, 'unfused eager', 'fused eager')} | "
                f"{_speedup(t, 'fused eager', 'fused + compile')} | "
                f"{_speedup(t, 'normflows', 'fused + compile')} | {_speedup(t, 'normflows', 'fused eager')} | "
                f"{_speedup(t, 'fused eager', 'onnxruntime')} |"
            )
    out += [
        "",
        "### Compilation and agreement",
        "",
        "Cold `torch.compile` time of the first call (fullgraph=True, so zero graph breaks by construction), "
        "and the largest "
        "log_prob difference to the unfused model, relative to max |log_prob|.",
        "",
        "| spec | compile log_prob (s) | compile inverse (s) | graph breaks | fused eager | fused + compile | "
        "onnxruntime |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r.compile_s
        e = r.errors
        fmt = lambda k: f"{e[k]:.1e}" if k in e else "–"  # noqa: E731
        cs = lambda k: f"{c[k]:.1f}" if k in c else "–"  # noqa: E731
        out.append(
            f"| {r.name} | {cs('log_prob')} | {cs('inverse')} | "
            f"{'0' if c else '–'} | {fmt('fused eager')} | {fmt('fused + compile')} | {fmt('onnxruntime')} |"
        )
    out += [
        "",
        "### FLOPs against the matrix-multiply peak",
        "",
        f"Float32 {1024}×{1024} matrix product in this run: best {peak[0]:.1f} GFLOP/s, median {peak[1]:.1f} GFLOP/s. "
        "FLOPs count convolutions and matrix products (`torch.utils.flop_counter`; element-wise work not counted).",
        "",
        "| spec | GFLOP per log_prob | GFLOP per sample batch | fastest log_prob | its GFLOP/s | % of peak | "
        "fastest sampling | its GFLOP/s | % of peak |",
        "|---|---:|---:|---|---:|---:|---|---:|---:|",
    ]
    for r in results:
        cells = [r.name, f"{r.flops['log_prob'] / 1e9:.3f}", f"{r.flops['sample'] / 1e9:.3f}"]
        for d in ("log_prob", "sample"):
            t = {k: v for k, v in r.times[d].items() if k in VARIANTS and k != "normflows"}
            best = min(t, key=lambda k: st.median(t[k]))
            rate = r.flops[d] / st.median(t[best]) / 1e9
            cells += [best, f"{rate:.1f}", f"{100 * rate / peak[0]:.0f}%"]
        out.append("| " + " | ".join(cells) + " |")
    notes = [f"* {r.name}: {n}" for r in results for n in r.notes]
    if notes:
        out += ["", "Notes:", "", *notes]
    return "\n".join(out) + "\n"
