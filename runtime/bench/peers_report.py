"""``flowdsl bench --sections peers``: flowdsl, zuko and nflows side by side (markdown).

    flowdsl bench --sections peers [--peers-steps 1000] [--peers-seeds 0,1,2] [--peers-data wine,...,pinwheel]
                  [--peers-same-start] [--peers-dims 64] [--peers-batch 256] [--threads 2] [--repeats 12] [--no-compile]

Quality: every (library, family, data set, seed) run of :func:`peers_runs.train_and_test` in a pool of
``threads`` worker processes of one thread each (runs are independent and small, so processes
use the cores better than threads); the runs and their order do not depend on the pool size. A
cell is the mean test NLL over the seeds (each seed draws the parameters and the batch order), and
the verdicts compare means: on the small tabular sets (36 test rows of wine) one seed's figure moves
by several hundredths of a nat/dim between seeds, more than the 0.02 margin being judged.
Speed: :func:`peers_runs.time_family` in this process on ``threads`` threads. The acceptance
lines of the issue are checked in both (flowdsl no worse than zuko by more than 0.02 nats/dim;
the spline coupling better than flowdsl's own affine coupling on each toy; log_prob ≥ 1.5× zuko on
NSF coupling and MAF, sampling ≥ 1.5× zuko on NSF coupling, MAF sampling not slower than zuko).
"""

from __future__ import annotations

import math
import time
from typing import Callable

from flowdsl.runtime.bench.peers import FAMILIES, Arch, available_libraries
from flowdsl.runtime.bench.peers_runs import TABULAR_SETS, TOY_SETS, RunResult, SpeedResult
from flowdsl.runtime.bench.peers_start import SAME_START

__all__ = ["peers_section", "quality_runs", "quality_tables", "speed_tables", "QUALITY_MARGIN"]

QUALITY_MARGIN = 0.02  # nats/dim: flowdsl's NSF and MAF may trail zuko's by at most this
SPEED_TARGETS = (  # (family, direction, least ratio of flowdsl fused + compile over zuko)
    ("nsf", "log_prob", 1.5),
    ("nsf", "sample", 1.5),
    ("maf", "log_prob", 1.5),
    ("maf", "sample", 1.0),
)
COLUMNS = [(f, lib) for f in ("nsf", "maf", "maf_spline") for lib in ("flowdsl", "zuko", "nflows")]


def _dims(data: str) -> int:
    from flowdsl.runtime.data.tabular import TABULAR

    return 2 if data in TOY_SETS else TABULAR[data][1]


def _jobs(datasets: list[str], families: list[str], libraries: list[str]) -> list[tuple[str, str, str]]:
    jobs = []
    for data in datasets:
        for fam in families:
            libs = ["flowdsl"] if fam == "affine" else libraries
            if fam == "affine" and data not in TOY_SETS:
                continue
            jobs += [(lib, fam, data) for lib in libs]
    # the largest runs first, so the pool ends together
    return sorted(jobs, key=lambda j: -_dims(j[2]) * (3 if "spline" in j[1] or j[1] == "nsf" else 1))


def _worker(job: tuple) -> RunResult | tuple[str, str, str, str]:
    import warnings

    import torch

    from flowdsl.errors import FlowDSLError
    from flowdsl.runtime.bench.peers_runs import load_split, train_and_test

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    (lib, fam, data), arch, steps, batch, lr, toy_n, seed = job
    try:
        return train_and_test(lib, fam, data, load_split(data, toy_n), arch, steps, batch, lr, seed)
    except FlowDSLError as e:  # e.g. a kind this checkout does not have yet
        return (lib, fam, data, str(e).splitlines()[0])


def quality_runs(
    datasets: list[str],
    families: list[str],
    arch: Arch,
    steps: int,
    batch: int = 256,
    lr: float = 1e-3,
    workers: int = 2,
    toy_n: int = 20_000,
    libraries: list[str] | None = None,
    say: Callable[[str], None] = print,
    seeds: tuple[int, ...] = (0,),
) -> tuple[list[RunResult], list[str]]:
    """All quality runs, one per seed; (results, notes on runs that could not be built)."""
    libraries = libraries or available_libraries()
    jobs = [(j, arch, steps, batch, lr, toy_n, s) for j in _jobs(datasets, families, libraries) for s in seeds]
    results: list[RunResult] = []
    notes: list[str] = []

    def take(out) -> None:
        if isinstance(out, RunResult):
            results.append(out)
            say(
                f"  peers: {out.library} {out.family} on {out.data}, seed {out.seed}: test {out.test_nll:.3f} nats/dim "
                f"(best step {out.best_step}, {out.seconds:.0f} s)"
            )
        else:
            lib, fam, data, why = out
            notes.append(f"{lib} {FAMILIES[fam]} on {data}: not built ({why})")
            say(f"  peers: {lib} {fam} on {data}: not built ({why})")

    say(f"peers quality: {len(jobs)} runs of {steps} steps, {workers} worker process(es)")
    if workers <= 1:
        for j in jobs:
            take(_worker(j))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(_worker, j) for j in jobs]):
                take(fut.result())
    return results, sorted(set(notes))


def _fmt(v: float | None, bold: bool = False) -> str:
    if v is None:
        return "–"
    if not math.isfinite(v):
        return "diverged"
    return f"**{v:.3f}**" if bold else f"{v:.3f}"


def _mean(runs: list[RunResult]) -> float:
    """Mean test NLL over the seeds; nan when any seed diverged."""
    vals = [r.test_nll for r in runs]
    return sum(vals) / len(vals) if all(math.isfinite(v) for v in vals) else math.nan


def _cell(runs: list[RunResult] | None, low: float | None) -> str:
    """The mean over the seeds, in bold when it is the row's lowest, and the seeds' range."""
    if not runs:
        return "–"
    m = _mean(runs)
    text = _fmt(m, m == low)
    if len(runs) > 1 and math.isfinite(m):
        text += f" ({min(r.test_nll for r in runs):.3f}–{max(r.test_nll for r in runs):.3f})"
    return text


def _paired(a: list[RunResult] | None, b: list[RunResult] | None) -> list[float]:
    """a − b at every seed both have."""
    by_seed = {r.seed: r.test_nll for r in b or []}
    return [r.test_nll - by_seed[r.seed] for r in a or [] if r.seed in by_seed]


def _verdict(a: list[RunResult] | None, b: list[RunResult] | None, ok: Callable[[float], bool]) -> str:
    """mean(a) − mean(b) with its verdict, and the range of the per-seed differences."""
    if not a or not b or not (math.isfinite(_mean(a)) and math.isfinite(_mean(b))):
        return "–"
    diff = _mean(a) - _mean(b)
    text = f"{diff:+.3f} " + ("yes" if ok(diff) else "**NO**")
    paired = _paired(a, b)
    if len(paired) > 1:
        text += f" [{min(paired):+.3f}, {max(paired):+.3f}]"
    return text


def quality_tables(
    results: list[RunResult], datasets: list[str], floors: dict[str, float | None], steps: int, batch: int, lr: float
) -> str:
    by: dict[tuple[str, str, str], list[RunResult]] = {}
    for r in sorted(results, key=lambda r: r.seed):
        by.setdefault((r.library, r.family, r.data), []).append(r)
    seeds = sorted({r.seed for r in results})
    n = len(seeds)
    cols = [c for c in COLUMNS if any((c[1], c[0], d) in by for d in datasets)]
    seed_words = (
        f"seed {seeds[0]} for parameters and batches"
        if n == 1
        else f"{n} seeds ({', '.join(map(str, seeds))}; each draws the parameters and the batch order): every cell "
        "is the mean test NLL over the seeds, with their range in brackets"
    )
    out = [
        f"### Test NLL (nats/dim, lower is better) after {steps} steps",
        "",
        f"Batch {batch}, Adam lr {lr} with cosine decay, gradient norm clipped at 5, {seed_words}; weights of the "
        "best validation loss (10 % of the train split, every 100 steps). "
        "Tabular sets in their standardised coordinates. The best model of each row in bold.",
        "",
        "| data (D) | exact density | "
        + " | ".join(f"{lib} {FAMILIES[f].split(' (')[0]}" for f, lib in cols)
        + " | flowdsl affine coupling |",
        "|---|---:|" + "---:|" * (len(cols) + 1),
    ]
    for d in datasets:
        groups = [by.get((lib, f, d)) for f, lib in cols] + [by.get(("flowdsl", "affine", d))]
        means = [_mean(g) for g in groups if g]
        finite = [m for m in means if math.isfinite(m)]
        low = min(finite) if finite else None
        cells = [_cell(g, low) for g in groups]
        out.append(f"| {d} ({_dims(d)}) | {_fmt(floors.get(d))} | " + " | ".join(cells) + " |")
    out += ["", "### Quality acceptance", ""]
    out += [
        f"flowdsl − zuko in nats/dim (target ≤ {QUALITY_MARGIN}); "
        "spline coupling − affine coupling (flowdsl, target < 0)"
        + ("." if n == 1 else "; differences of the means over the seeds, the per-seed differences' range in "
           "brackets."),
        "",
        "| data | NSF: flowdsl − zuko | MAF: flowdsl − zuko | MAF spline: flowdsl − zuko | spline − affine coupling |",
        "|---|---:|---:|---:|---:|",
    ]
    for d in datasets:
        cells = [
            _verdict(by.get(("flowdsl", f, d)), by.get(("zuko", f, d)), lambda x: x <= QUALITY_MARGIN)
            for f in ("nsf", "maf", "maf_spline")
        ]
        cells.append(_verdict(by.get(("flowdsl", "nsf", d)), by.get(("flowdsl", "affine", d)), lambda x: x < 0))
        out.append(f"| {d} | " + " | ".join(cells) + " |")
    if any(r.library == SAME_START for r in results):
        out += _same_start_table(by, datasets)
    out += [
        "",
        "### Parameters and training time",
        "",
        "Effective parameters (a MADE's masked-out weights not counted; stored count in brackets where it "
        "differs) and the CPU time of a run's training loop (seconds, mean over the seeds; one thread per run, "
        "so on a quiet machine this is its wall time; wall time in brackets).",
        "",
        "| data | model | flowdsl | zuko | nflows | CPU time flowdsl / zuko / nflows (s) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for d in datasets:
        for f in ("nsf", "maf", "maf_spline", "affine"):
            runs = [by.get((lib, f, d)) for lib in ("flowdsl", "zuko", "nflows")]
            if not any(runs):
                continue
            pc = [_params(g[0].params) if g else "–" for g in runs]
            secs = " / ".join(
                "–"
                if not g
                else f"{sum(r.cpu_seconds for r in g) / len(g):.0f} [{sum(r.seconds for r in g) / len(g):.0f}]"
                for g in runs
            )
            out.append(f"| {d} | {FAMILIES[f]} | " + " | ".join(pc) + f" | {secs} |")
    notes = [f"* {r.library} {FAMILIES[r.family]} on {r.data}, seed {r.seed}: {n}" for r in results for n in r.notes]
    if notes:
        out += ["", *notes]
    return "\n".join(out) + "\n"


def _same_start_table(by: dict[tuple[str, str, str], list[RunResult]], datasets: list[str]) -> list[str]:
    """flowdsl from zuko's initial weights − zuko, per family (``peers_start``): the implementation's
    share of the gap, with the draw of the initial weights taken out."""
    fams = [f for f in ("nsf", "maf", "maf_spline") if any((SAME_START, f, d) in by for d in datasets)]
    out = [
        "",
        "### Same start: flowdsl from zuko's initial weights",
        "",
        "flowdsl's model given zuko's initial parameters of each seed (and, for a MADE, zuko's connectivity), "
        "trained by the same loop on the same batches (`flowdsl.runtime.bench.peers_start`). "
        "Mean over the seeds of (flowdsl from zuko's start − zuko) in nats/dim, the per-seed differences' range "
        "in brackets, and the largest per-seed |difference|: what the implementations contribute to the gap above "
        "once the initial draw is the same. The splines keep flowdsl's minimum bin size of 1e-3 (zuko has none).",
        "",
        "| data | "
        + " | ".join(f"{FAMILIES[f].split(' (')[0]}: same start − zuko | largest \\|Δ\\|" for f in fams)
        + " |",
        "|---|" + "---:|---:|" * len(fams),
    ]
    ok = lambda x: x <= QUALITY_MARGIN  # noqa: E731
    for d in datasets:
        cells = []
        for f in fams:
            ours, theirs = by.get((SAME_START, f, d)), by.get(("zuko", f, d))
            cells.append(_verdict(ours, theirs, ok))
            gaps = [abs(v) for v in _paired(ours, theirs)]
            cells.append(f"{max(gaps):.1e}" if gaps and all(map(math.isfinite, gaps)) else "–")
        out.append(f"| {d} | " + " | ".join(cells) + " |")
    return out


def _params(p: tuple[int, int]) -> str:
    return f"{p[1]:,}" + (f" [{p[0]:,}]" if p[0] != p[1] else "")


def _ratio(slow: list[float], fast: list[float]) -> tuple[float, float, float]:
    from flowdsl.runtime.bench.timing import _ratio as r

    return r(slow, fast)


def speed_tables(results: list[SpeedResult], repeats: int, threads: int) -> str:
    from flowdsl.runtime.bench.timing import _ms

    variants = ["flowdsl unfused", "flowdsl fused", "flowdsl fused + compile", "zuko", "nflows"]
    b = results[0].batch if results else 0
    out = [
        f"### Time per call (ms, batch {b}, {threads} thread(s), float32)",
        "",
        f"Median [interquartile range] over {repeats} rounds; every round runs each variant once in a shuffled "
        "order. Speed-ups are the median [IQR] of the per-round ratios.",
        "",
        "| model | D | direction | " + " | ".join(variants) + " | compiled vs zuko | compiled vs nflows |",
        "|---|---:|---|" + "---:|" * (len(variants) + 2),
    ]
    for r in results:
        for d, t in r.times.items():
            cells = [_ms(t[v]) if v in t else "–" for v in variants]
            for peer in ("zuko", "nflows"):
                if peer in t and "flowdsl fused + compile" in t:
                    lo, med, hi = _ratio(t[peer], t["flowdsl fused + compile"])
                    cells.append(f"{med:.2f}× [{lo:.2f}–{hi:.2f}]")
                else:
                    cells.append("–")
            out.append(f"| {FAMILIES[r.family]} | {r.dim} | {d} | " + " | ".join(cells) + " |")
    out += [
        "",
        "### Speed acceptance (flowdsl as the README documents vs zuko)",
        "",
        "flowdsl fused + compile, except for a sequential direction (MAF sampling: D unrolled steps "
        "per layer), where the README documents the fused module uncompiled.",
        "",
        "| model | D | direction | flowdsl variant | target | measured | met? |",
        "|---|---:|---|---|---:|---:|---|",
    ]
    for fam, d, target in SPEED_TARGETS:
        for r in (r for r in results if r.family == fam):
            t = r.times.get(d, {})
            ours = "flowdsl fused + compile" if "flowdsl fused + compile" in t else "flowdsl fused"
            cells = f"| {FAMILIES[fam]} | {r.dim} | {d} | {ours.removeprefix('flowdsl ')} | ≥ {target}× |"
            if "zuko" not in t or ours not in t:
                out.append(f"{cells} – | not measured |")
                continue
            lo, med, hi = _ratio(t["zuko"], t[ours])
            ok = "yes" if med >= target else "**NO**"
            out.append(f"{cells} {med:.2f}× [{lo:.2f}–{hi:.2f}] | {ok} |")
    out += [
        "",
        "### Parameters, compile time and agreement",
        "",
        "| model | D | flowdsl | zuko | nflows | compile log_prob (s) | compile sampling (s) | "
        "fused / compiled vs unfused (max rel. Δ log_prob) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        pc = [f"{r.params[lib][1]:,}" if lib in r.params else "–" for lib in ("flowdsl", "zuko", "nflows")]
        cs = [f"{r.compile_s[k]:.1f}" if k in r.compile_s else "–" for k in ("log_prob", "sample")]
        errs = " / ".join(f"{r.errors[k]:.1e}" for k in ("flowdsl fused", "flowdsl fused + compile") if k in r.errors)
        out.append(f"| {FAMILIES[r.family]} | {r.dim} | " + " | ".join(pc + cs) + f" | {errs} |")
    notes = [f"* {FAMILIES[r.family]}, D={r.dim}: {n}" for r in results for n in r.notes]
    if notes:
        out += ["", *notes]
    return "\n".join(out) + "\n"


def peers_section(
    steps: int = 1000,
    datasets: list[str] | None = None,
    dims: list[int] | None = None,
    families: list[str] | None = None,
    arch: Arch = Arch(),
    batch: int = 256,
    lr: float = 1e-3,
    speed_batch: int = 256,
    repeats: int = 12,
    threads: int = 2,
    compile_: bool = True,
    toy_n: int = 20_000,
    say: Callable[[str], None] = print,
    seeds: tuple[int, ...] = (0, 1, 2),
    same_start: bool = False,
) -> str:
    """The ``## Peers: zuko and nflows`` section: quality runs (none when ``steps`` is 0) over
    ``seeds`` (with ``same_start``, also flowdsl's models started from zuko's initial weights:
    ``peers_start``), then the speed tables at each of ``dims`` (none when it is empty)."""
    import torch

    from flowdsl.errors import FlowDSLError
    from flowdsl.runtime.bench.peers_runs import load_split, time_family, true_test_nll

    datasets = list(TABULAR_SETS + TOY_SETS) if datasets is None else datasets
    dims = [64] if dims is None else dims
    libs = available_libraries()
    a = arch
    text = [
        "## Peers: zuko and nflows",
        "",
        f"The same architectures in flowdsl (spec text), zuko and nflows (`flowdsl.runtime.bench.peers`): "
        f"{a.layers} transforms, conditioner MLPs of {a.depth} hidden layers × {a.hidden} units (SiLU in coupling "
        "nets, ReLU in MADEs, as flowdsl's), splines of "
        f"{a.bins} bins on [−{a.bound:g}, {a.bound:g}] with identity tails; NSF = spline coupling (halves "
        "alternating), MAF = masked autoregressive (orders alternating), standard normal base. "
        f"Libraries: {', '.join(_versions(libs))}.",
        "",
    ]
    if "zuko" not in libs:
        text += ["zuko is not installed (`pip install 'flowdsl[bench]'`): the acceptance comparisons are missing.", ""]
    families = ["nsf", "affine", "maf", "maf_spline"] if families is None else families
    if steps > 0:
        t0 = time.perf_counter()
        run_libs = libs + ([SAME_START] if same_start and "zuko" in libs else [])
        results, notes = quality_runs(datasets, families, a, steps, batch, lr, threads, toy_n, run_libs, say, seeds)
        cpu = sum(r.cpu_seconds for r in results)
        say(f"peers quality: {time.perf_counter() - t0:.0f} s wall, {cpu:.0f} s CPU in the runs")
        floors = {d: true_test_nll(d, load_split(d, toy_n)[2]) for d in datasets}
        text += [quality_tables(results, datasets, floors, steps, batch, lr)]
        text += [
            f"Quality runs: {len(results)} in {time.perf_counter() - t0:.0f} s wall time on {threads} worker "
            f"process(es), {cpu:.0f} s CPU time in their training loops.",
            "",
        ]
        if notes:
            text += ["Not run:", "", *[f"* {n}" for n in notes], ""]
    speed: list[SpeedResult] = []
    skipped: list[str] = []
    torch.set_num_threads(threads)
    for fam in (f for f in ("nsf", "maf", "maf_spline") if f in families):
        for dim in dims:
            try:
                speed.append(time_family(fam, dim, a, speed_batch, repeats, libs, compile_, say))
            except FlowDSLError as e:
                skipped.append(f"* {FAMILIES[fam]}, D={dim}: flowdsl cannot build it here ({str(e).splitlines()[0]})")
    if dims:
        text += [speed_tables(speed, repeats, threads)]
    if skipped:
        text += ["Not timed:", "", *skipped, ""]
    return "\n".join(text)


def _versions(libs: list[str]) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for lib in libs:
        try:
            out.append(f"{lib} {version(lib)}")
        except PackageNotFoundError:
            out.append(lib)
    return out
