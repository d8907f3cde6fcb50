"""``flowdsl bench``: throughput, FLOPs and memory of compiled flows, side by side; BENCHMARKS.md.

    flowdsl bench SPEC... [--batch 64] [--repeats 12] [--threads 2] [--out BENCHMARKS.md]
                          [--sections fusion,acceptance,convs,rg] [--acceptance-threads 1,2]
                          [--no-compile] [--no-onnx] [--no-memory] [--device auto|cpu|cuda[:N]]

For every spec, at batch 64 in float32 on the CPU, log_prob (x → log p(x)) and sampling
(z ~ prior → x) are timed for

    unfused eager     the compiled training-form model (``flowdsl.compile``), under no_grad
    fused eager       ``model.fuse()``
    fused + compile   ``torch.compile(fused.log_prob / fused.inverse, fullgraph=True,
                      options={"freezing": True})`` (cold compile time reported)
    onnxruntime       ``forward.onnx`` / ``inverse.onnx`` from ``flowdsl.export_onnx``
    normflows         for Glow specs, the same architecture built in normflows (a
                      benchmark-only dependency: ``pip install flowdsl[bench]``)

each spec in its own fresh process (the same start for all: allocator state, caches, a cold
inductor compile), alternating: every round runs each variant of both directions once (in a
rotating order), so all see the same machine load; tables give medians and the interquartile
range, and every speed-up is the median over rounds of the per-round ratio. The model's FLOP count (convolutions
and matrix products, ``torch.utils.flop_counter``) is set against a float32 matrix-multiply
peak measured in the same run. Memory: the peak resident-memory increase of one training step
(unfused, and with invertible-memory recomputation), of inference (unfused vs fused) and of an
input-gradient pass, each in a fresh subprocess (``bench_memory``). The acceptance section
(``bench_acceptance``) times ``glow_cifar`` again per thread count, also in the steady state
after a training step and against the conditioners' convolutions alone (the floor of what
fusion can remove); ``--sections acceptance`` runs only that. The other engineers' benchmark sections
(``flowdsl.runtime.bench.convs``, ``flowdsl.runtime.bench.rg``) are appended when present, so
one command writes BENCHMARKS.md.

``--device`` (default ``cpu`` here, unlike training: the tables are CPU benchmarks) moves the model
and its inputs to another device for the fusion table (CUDA: every timed call ends with
``torch.cuda.synchronize``); the columns and sections that measure the CPU (onnxruntime's CPU
provider, normflows, resident memory, the oneDNN acceptance targets, convs, rg) are then left out
with a note. CUDA itself is untested here.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics as st
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from flowdsl.runtime.bench.normflows import glow_structure, normflows_glow
from flowdsl.runtime.bench.peers_cli import add_peers_arguments, peers_part
from flowdsl.runtime.bench.report import fusion_report
from flowdsl.runtime.bench.spec_bench import bench_spec, run_spec_probe
from flowdsl.runtime.bench.timing import SpecResult, alternate, matmul_peak
from flowdsl.runtime.training.device import _device_text
from flowdsl.wording import plural

__all__ = ["register", "alternate", "bench_spec", "glow_structure", "normflows_glow", "matmul_peak", "SpecResult"]


# ------------------------------------------------------------------------- the report
def _other_sections(
    sections: list[str], batch: int, threads: int, say: Callable[[str], None], specs: list[str]
) -> list[str]:
    import importlib

    out: list[str] = []
    if "frontend" in sections:
        from flowdsl.runtime.bench.frontend import frontend_section

        out.append(frontend_section(specs[0], say))  # the cold check runs on the first spec given
    if "convs" in sections:
        try:
            mod = importlib.import_module("flowdsl.runtime.bench.convs")
        except ModuleNotFoundError:
            mod = None
        if mod is not None:
            say("section convs: flowdsl.runtime.bench.convs.run()")
            out.append(
                "## Invertible convolutions and butterflies (`flowdsl.runtime.bench.convs.run`)\n\n"
                + mod.run(batch=batch)
            )
    if "rg" in sections:
        try:
            mod = importlib.import_module("flowdsl.runtime.bench.rg")
        except ModuleNotFoundError:
            mod = None
        if mod is not None and hasattr(mod, "inpaint_benchmark"):
            say(
                "section rg: flowdsl.runtime.bench.rg.inpaint_benchmark() on 1 thread "
                "(as `flowdsl explain --inpaint-benchmark`)"
            )
            prev = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                table, _ = mod.inpaint_benchmark((8, 16, 32, 64), hole=4, steps=100, fit_steps=800, repeats=3)
            finally:
                torch.set_num_threads(prev)
            out.append(
                "## RG-Flow inpainting (`flowdsl.runtime.bench.rg.inpaint_benchmark`)\n\n"
                "Sizes 8, 16, 32, 64; a 4×4 hole; 100 MAP steps; models fitted for 800 steps on photo patches; "
                "CPU time, fastest of 3; 1 thread (the set-up of `benchmarks/rg.md`, which explains the columns).\n\n"
                + table
            )
    return out


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cmd(args: argparse.Namespace) -> int:
    from flowdsl.errors import FlowDSLError

    for p in args.specs:
        if not Path(p).is_file():
            raise FlowDSLError(f"no such spec file: {p}", filename=p)
    need_specs = [s for s in args.sections.split(",") if s.strip() in SPEC_SECTIONS]
    if need_specs and not args.specs:
        raise FlowDSLError(
            f"the section(s) {', '.join(s.strip() for s in need_specs)} need at least one SPEC "
            "(only convs, rg and peers run without one)",
            filename="flowdsl bench",
        )
    from flowdsl.runtime.training.device import resolve_device

    if args.out:  # refused before the benchmark runs, not after
        from flowdsl.outputs import check_output_path

        check_output_path(args.out, what="benchmark report")
    torch.set_num_threads(args.threads)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    dev = resolve_device(args.device)
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    command = (
        "flowdsl bench " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("bench") + 1 :])
        if "bench" in sys.argv
        else "flowdsl bench"
    )
    load0 = _loadavg()
    versions = [f"torch {torch.__version__}"]
    for mod in ("onnxruntime", "normflows"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            pass
    parts: list[str] = []
    flags = {"compile": not args.no_compile, "onnx": not args.no_onnx, "normflows": not args.no_normflows}
    flags["device"] = str(dev)
    cpu_only: list[str] = []
    if dev.type != "cpu":  # the other sections measure the CPU (oneDNN targets, resident memory, ...)
        cpu_only = [sec for sec in sections if sec != "fusion"] + (["memory"] if not args.no_memory else [])
        sections = [sec for sec in sections if sec == "fusion"]
        args.no_memory = True
    glow = next((p for p in args.specs if Path(p).stem == "glow_cifar"), None)  # the acceptance spec
    if "acceptance" in sections and "fusion" not in sections:  # only the glow_cifar targets
        if glow is None:
            raise FlowDSLError(
                "--sections acceptance needs specs/glow_cifar.flow among the specs", filename="flowdsl bench"
            )
        parts.append(acceptance_section(glow, args, flags, say))
    if "fusion" in sections:
        from flowdsl.runtime.bench.memory import memory_table

        peak0 = matmul_peak(args.threads, device=str(dev))
        results: list[SpecResult] = []
        skipped: list[str] = []
        for path in args.specs:
            say(f"bench {path} (fresh process)")
            try:
                results.append(run_spec_probe(path, args.batch, args.repeats, args.threads, flags, warm=False))
            except RuntimeError as e:  # e.g. a spec that does not check: reported, the others still run
                say(f"  skipped: {e}")
                skipped.append(f"* `{path}` was skipped: {e}")
        bad = {line.split("`")[1] for line in skipped}
        args.specs = [p for p in args.specs if p not in bad]
        peak1 = matmul_peak(args.threads, device=str(dev))
        peak = (max(peak0[0], peak1[0]), st.median([peak0[1], peak1[1]]))
        if glow is not None and glow not in bad and dev.type == "cpu":
            parts.append(acceptance_section(glow, args, flags, say))
        parts.append(
            "## Fused inference modules: throughput, compile, FLOPs\n\n"
            + fusion_report(results, args.batch, args.repeats, peak)
            + ("\n" + "\n".join(skipped) + "\n" if skipped else "")
        )
        if not args.no_memory:
            mem_specs = [p for p in args.specs if not args.memory_specs or Path(p).stem in args.memory_specs.split(",")]
            say("memory probes (one fresh process each)")
            parts.append(
                "## Memory\n\n"
                "Peak resident-memory increase of one call after a warm-up call, each in a fresh process with "
                "`MALLOC_MMAP_THRESHOLD_=4096` (every block of 4 KiB or more is its own mapping, "
                "returned to the OS when "
                "freed, so the peak follows the live tensors); *kept for backward* sums the tensors autograd saves "
                "(`saved_tensors_hooks`). Invertible memory "
                "= `flowdsl.runtime.training.memory.InvertibleMemory` (activations recomputed from the outputs "
                "in backward). "
                f"Batch {args.batch}, {args.threads} thread(s).\n\n"
                + memory_table(mem_specs, args.batch, args.threads, say)
            )
    parts += _other_sections(sections, args.batch, args.threads, say, args.specs)
    if "peers" in sections:
        parts.append(peers_part(args, say))
    if cpu_only:
        parts.append(f"(On {dev}: the CPU sections {', '.join(cpu_only)} were not run.)\n")
    head = [
        "# flowdsl benchmarks",
        "",
        "Produced by",
        "",
        f"    {command}",
        "",
        f"({time.strftime('%Y-%m-%d %H:%M')}, {', '.join(versions)}; {_cpu()}, {args.threads} thread(s), "
        f"device {dev}; "
        f"load average {load0} at the start and {_loadavg()} at the end — the machine is shared, so absolute times "
        "vary between runs; the side-by-side ratios are the comparable numbers.)",
        "",
    ]
    text = "\n".join(head) + "\n".join(p if p.endswith("\n") else p + "\n" for p in parts)
    print(text)
    if args.out:
        out = Path(args.out)
        kept = _foreign_sections(out.read_text() if out.is_file() else "", text)
        if kept:
            say(f"kept {plural(len(kept), 'section')} of {out} that this command does not produce")
        from flowdsl.outputs import atomic_write_text

        atomic_write_text(out, text + "".join("\n" + k.rstrip("\n") + "\n" for k in kept), what="benchmark report")
        say(f"wrote {args.out}")
    return 0


def acceptance_section(glow: str, args: argparse.Namespace, flags: dict[str, bool], say: Callable[[str], None]) -> str:
    """``## Acceptance``: the glow_cifar probe (warm state and convolution floor included) on
    ``--threads`` and every ``--acceptance-threads`` count, each in its own fresh process."""
    from flowdsl.runtime.bench.acceptance import acceptance

    text = (
        "Each thread count in its own fresh process: all variants alternate round by round; then the unfused "
        "model takes one training step and the same rounds run again (glibc's malloc keeps the freed blocks after "
        "such a peak, so the unfused model's large temporaries stop costing page faults, which narrows the eager "
        "gap: the steady state). A target counts as met only when it holds in both states. The targets' "
        "configuration is 2 threads. `flowdsl.runtime.bench.acceptance` explains the convolution floor.\n\n"
    )
    threads = [args.threads] + [v for v in args.acceptance_threads if v != args.threads]
    for t in threads:
        say(f"acceptance: {glow} on {t} thread(s) (fresh process)")
        text += (
            f"### {t} thread(s)\n\n"
            + acceptance(run_spec_probe(glow, args.batch, args.repeats, t, flags, warm=True))
            + "\n"
        )
    return "## Acceptance\n\n" + text


SPEC_SECTIONS = ("fusion", "acceptance", "frontend")


def _foreign_sections(old: str, new: str) -> list[str]:
    """``## `` sections of an existing report that ``new`` does not contain (e.g. added by hand
    or by another command), so that re-running ``flowdsl bench --out`` keeps them."""

    def sections(text: str) -> list[str]:
        parts = ("\n" + text).split("\n## ")[1:]
        return ["## " + p for p in parts]

    produced = {sec.splitlines()[0] for sec in sections(new)}
    return [sec for sec in sections(old) if sec.splitlines()[0] not in produced]


def register(subparsers) -> None:
    from flowdsl.cliargs import batch_size, int_list, positive_int, thread_count

    b = subparsers.add_parser(
        "bench", help="benchmark specs: unfused/fused/compiled/onnxruntime/normflows, FLOPs, memory"
    )
    b.add_argument("specs", nargs="*", metavar="SPEC", help="spec files to benchmark (not needed by convs, rg, peers)")
    b.add_argument("--batch", type=batch_size, default=64, help="batch size of the timed calls (default 64)")
    b.add_argument("--repeats", type=positive_int(10_000), default=12, help="alternating rounds per direction")
    b.add_argument("--threads", type=thread_count, default=2, help="torch (and onnxruntime) threads of the main tables")
    b.add_argument(
        "--acceptance-threads",
        type=int_list(thread_count),
        default=[],
        help="comma list: re-run the glow_cifar acceptance comparison on these thread counts too",
    )
    b.add_argument("--out", default=None, help="write the markdown here (e.g. BENCHMARKS.md)")
    b.add_argument(
        "--sections",
        default="fusion,convs,rg",
        help="comma list of: fusion (every spec, with the acceptance section and memory), acceptance (only "
        "the glow_cifar targets), convs, rg, frontend (cold check and warm parse times), peers (flowdsl vs zuko "
        "and nflows: NSF coupling, MAF affine, MAF spline; quality and speed)",
    )
    add_peers_arguments(b)
    b.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variant")
    b.add_argument("--no-onnx", action="store_true", help="leave out the onnxruntime variant")
    b.add_argument("--no-normflows", action="store_true", help="leave out the normflows comparison")
    b.add_argument("--no-memory", action="store_true", help="leave out the training-step memory table")
    b.add_argument("--memory-specs", default="", help="comma list of spec names for the memory table (default: all)")
    b.add_argument(
        "--device",
        type=_device_text,
        default="cpu",
        metavar="DEVICE",
        help="where the fusion table's models run: cpu (default), auto (CUDA when present), cuda or cuda:N; "
        "off the CPU only the fusion table is made",
    )
    b.set_defaults(func=_cmd)
