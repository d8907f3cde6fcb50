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
import json
import os
import platform
import shlex
import statistics as st
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from flowdsl.runtime.bench.normflows import glow_structure, normflows_glow
from flowdsl.runtime.bench.report import fusion_report
from flowdsl.runtime.bench.timing import SpecResult, alternate, count_flops, matmul_peak, prepared_model
from flowdsl.runtime.training.demo import random_context
from flowdsl.runtime.training.device import _device_text
from flowdsl.wording import plural

__all__ = ["register", "alternate", "bench_spec", "glow_structure", "normflows_glow", "matmul_peak", "SpecResult"]


def bench_spec(
    path: str,
    batch: int,
    repeats: int,
    threads: int,
    compile_: bool = True,
    onnx: bool = True,
    normflows: bool = True,
    warm: bool = False,
    floor: bool = False,
    say: Callable[[str], None] = print,
    device: str = "cpu",
) -> SpecResult:
    """Time every variant of one spec in this process (see the module docstring); with ``warm``,
    time them again after one training step of the unfused model (glibc's malloc keeps freed
    blocks after such a peak, which removes page faults from later calls); with ``floor``, also
    time the fused model's conditioner convolutions alone (``bench_acceptance.conditioner_floor``);
    ``device``: where the models and inputs live (not the CPU: no onnxruntime, normflows or floor)."""
    spec, model, x = prepared_model(path, batch)
    res = SpecResult(spec.name, threads=threads)
    dev = torch.device(device)
    if dev.type != "cpu":
        model, x = model.to(dev), x.to(dev)
        off = [name for name, on in (("onnxruntime", onnx), ("normflows", normflows), ("floor", floor)) if on]
        if off:
            res.notes.append(f"on {dev}: no {', '.join(off)} (CPU measurements)")
        onnx = normflows = floor = False
    fused = model.fuse()
    # conditional specs: one random context per example, fed to every variant alike
    c = random_context(model, batch, x.dtype)
    if c is not None:
        c = c.to(x.device)
        res.notes.append(f"conditional: a random {model.context_kind} context per example")

    def z_batch():  # latents from the prior (a conditional prior: given the context)
        if c is None:
            return fused.prior.sample(batch)
        ref = fused._ref_tensor()
        return fused._prior_sample(batch, 1.0, ref.device, ref.dtype, fused.encode_context(c, batch))

    lp: dict[str, Callable] = {
        "unfused eager": lambda: model.log_prob(x, context=c),
        "fused eager": lambda: fused.log_prob(x, context=c),
    }
    sa: dict[str, Callable] = {
        "unfused eager": lambda: model.inverse(z_batch(), context=c),
        "fused eager": lambda: fused.inverse(z_batch(), context=c),
    }
    ref_lp = model.log_prob(x, context=c).detach()
    ref_lp_scale = float(ref_lp.abs().max().clamp_min(1.0))
    if not len(fused.steps):
        res.notes.append("no layers: nothing to fuse")
    if compile_ and len(fused.steps):
        torch._dynamo.reset()
        opts = {"freezing": True}
        c_lp = torch.compile(lambda v: fused.log_prob(v, context=c), fullgraph=True, dynamic=False, options=opts)
        c_inv = torch.compile(lambda v: fused.inverse(v, context=c), fullgraph=True, dynamic=False, options=opts)
        with torch.no_grad():
            for key, fn, arg in (("log_prob", c_lp, x), ("inverse", c_inv, z_batch())):
                t = time.perf_counter()
                fn(arg)
                res.compile_s[key] = time.perf_counter() - t
                say(f"  {spec.name}: compiled {key} in {res.compile_s[key]:.1f} s")
            res.errors["fused + compile"] = float((c_lp(x) - ref_lp).abs().max()) / ref_lp_scale
        lp["fused + compile"] = lambda: c_lp(x)
        sa["fused + compile"] = lambda: c_inv(z_batch())
    if onnx and len(fused.steps):
        import onnxruntime as ort

        import flowdsl

        tmp = tempfile.mkdtemp(prefix="flowdsl-bench-")
        fwd_path, inv_path = flowdsl.export_onnx(model, tmp)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # no busy-waiting of onnxruntime's worker threads after a run: they would take a core
        # from whichever variant runs next
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        s_f = ort.InferenceSession(fwd_path, so, providers=["CPUExecutionProvider"])
        s_i = ort.InferenceSession(inv_path, so, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        extra = {} if c is None else {"context": c.numpy()}
        lp["onnxruntime"] = lambda: s_f.run(["log_prob"], {"x": xn, **extra})
        sa["onnxruntime"] = lambda: s_i.run(None, {"z": z_batch().numpy(), **extra})
        res.errors["onnxruntime"] = (
            float(abs(torch.from_numpy(s_f.run(["log_prob"], {"x": xn, **extra})[0]) - ref_lp).max()) / ref_lp_scale
        )
    if floor and len(fused.steps):
        from flowdsl.runtime.bench.acceptance import FLOOR, conditioner_floor

        z_fixed = z_batch()
        f_lp = conditioner_floor(fused, lambda: fused.log_prob(x, context=c))
        f_inv = conditioner_floor(fused, lambda: fused.inverse(z_fixed, context=c))
        if f_lp is not None and f_inv is not None:
            lp[FLOOR], sa[FLOOR] = f_lp, f_inv
    scales = glow_structure(spec.graph) if c is None else None  # normflows' Glow is unconditional
    if normflows and scales is not None:
        try:
            import warnings

            with warnings.catch_warnings():  # normflows calls the deprecated torch.lu
                warnings.simplefilter("ignore")
                nfm = normflows_glow(scales)
        except ImportError:
            res.notes.append("normflows is not installed (pip install 'flowdsl[bench]'): no normflows column")
        else:
            nfm.eval()
            with torch.no_grad():
                nfm.log_prob(x, None)  # normflows' data-dependent actnorm initialisation
            lp["normflows"] = lambda: nfm.log_prob(x, None)
            sa["normflows"] = lambda: nfm.sample(batch)
            n_ours = sum(p.numel() for p in model.steps.parameters())
            n_nf = sum(p.numel() for f in nfm.flows for p in f.parameters())
            res.notes.append(f"normflows Glow: {n_nf:,} flow parameters (flowdsl: {n_ours:,})")
    with torch.no_grad():
        res.errors["fused eager"] = float((fused.log_prob(x, context=c) - ref_lp).abs().max()) / ref_lp_scale
        res.flops["log_prob"] = count_flops(lambda: model.log_prob(x, context=c))
        res.flops["sample"] = count_flops(lambda: model.inverse(z_batch(), context=c))
    say(f"  {spec.name}: timing {', '.join(lp)} ({repeats} alternating rounds, both directions)")
    fns = {**{f"log_prob|{k}": v for k, v in lp.items()}, **{f"sample|{k}": v for k, v in sa.items()}}
    if dev.type == "cuda":  # time the work, not the launch: wait for the device after every call
        fns = {k: (lambda f=f: (f(), torch.cuda.synchronize(dev))) for k, f in fns.items()}
    times = alternate(fns, repeats)
    for d in ("log_prob", "sample"):
        res.times[d] = {k.split("|", 1)[1]: v for k, v in times.items() if k.startswith(d + "|")}
    if warm:
        say(f"  {spec.name}: one training step, then the same rounds again")
        model.train()
        (-model.log_prob(x, context=c).mean()).backward()
        model.zero_grad(set_to_none=True)
        model.eval()
        times = alternate(fns, repeats)
        res.warm = {
            d: {k.split("|", 1)[1]: v for k, v in times.items() if k.startswith(d + "|")}
            for d in ("log_prob", "sample")
        }
        if floor and len(fused.steps):
            from flowdsl.runtime.bench.acceptance import conv_kernels

            say(f"  {spec.name}: the floor's convolutions, kernel by kernel")
            res.kernels = conv_kernels(fused, lambda: fused.log_prob(x, context=c), threads, repeats)
    return res


def run_spec_probe(path: str, batch: int, repeats: int, threads: int, flags: dict[str, bool], warm: bool) -> SpecResult:
    """:func:`bench_spec` in a fresh process (the same start for every spec: allocator, caches,
    and a cold inductor compile: its on-disk caches are disabled); a ``warm`` probe (the acceptance
    one) also times the convolution floor. Raises RuntimeError on failure."""
    env = dict(os.environ, TORCHINDUCTOR_FORCE_DISABLE_CACHES="1")
    cmd = [
        sys.executable,
        "-m",
        "flowdsl.runtime.bench.suite",
        "--spec-probe",
        json.dumps({"path": path, "batch": batch, "repeats": repeats, "threads": threads, "warm": warm, **flags}),
    ]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"probe failed (exit {out.returncode}): {lines[-1] if lines else 'no output'}")
    data = json.loads(lines[-1])
    if "error" in data:
        raise RuntimeError(data["error"])
    return SpecResult(**data)


def _spec_probe(cfg: dict) -> dict:
    import dataclasses
    import warnings

    from flowdsl.errors import FlowDSLError

    warnings.simplefilter("ignore")
    torch.set_num_threads(cfg["threads"])
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    try:
        res = bench_spec(
            cfg["path"],
            cfg["batch"],
            cfg["repeats"],
            cfg["threads"],
            compile_=cfg["compile"],
            onnx=cfg["onnx"],
            normflows=cfg["normflows"],
            warm=cfg["warm"],
            floor=cfg["warm"],
            say=say,
            device=cfg.get("device", "cpu"),
        )
    except FlowDSLError as e:
        return {"error": f"does not check: {str(e).splitlines()[0]}"}
    return dataclasses.asdict(res)


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


def name_list(known: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: a comma list of names, each one of ``known`` (at least one)."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in str(text).split(",") if n.strip()]
        bad = [n for n in names if n not in known]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown name(s) {', '.join(map(repr, bad))}; known: {', '.join(known)}"
                if bad
                else f"give at least one of {', '.join(known)}"
            )
        return names

    parse.__name__ = "list"
    return parse


def peers_part(args: argparse.Namespace, say: Callable[[str], None]) -> str:
    """``## Peers: zuko and nflows`` (``flowdsl.runtime.bench.peers_report``)."""
    from flowdsl.runtime.bench.peers import Arch
    from flowdsl.runtime.bench.peers_report import peers_section

    return peers_section(
        steps=args.peers_steps,
        datasets=args.peers_data,
        dims=args.peers_dims,
        families=args.peers_models,
        arch=Arch(),
        batch=args.peers_train_batch,
        speed_batch=args.peers_batch,
        repeats=args.repeats,
        threads=args.threads,
        compile_=not args.no_compile,
        say=say,
        seeds=tuple(args.peers_seeds),
        same_start=args.peers_same_start,
    )


def _seed_list(text: str) -> list[int]:
    """An argparse type: a non-empty comma list of seeds (whole numbers ≥ 0) and ranges ``a-b``
    (both ends included), e.g. ``0,1,2`` or ``0-29``."""
    from flowdsl.cliargs import int_list, nonnegative_int

    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        lo, dash, hi = part.partition("-")
        if dash:
            if not (lo.strip() and hi.strip()):
                raise argparse.ArgumentTypeError(f"{part!r}: expected a seed or a range a-b")
            a, b = (nonnegative_int()(v) for v in (lo, hi))
            if b < a:
                raise argparse.ArgumentTypeError(f"seed range {part!r} runs backwards")
            out += range(a, b + 1)
        elif part:
            out += int_list(nonnegative_int())(part)
    if not out:
        raise argparse.ArgumentTypeError("give at least one seed")
    return list(dict.fromkeys(out))


def _foreign_sections(old: str, new: str) -> list[str]:
    """``## `` sections of an existing report that ``new`` does not contain (e.g. added by hand
    or by another command), so that re-running ``flowdsl bench --out`` keeps them."""

    def sections(text: str) -> list[str]:
        parts = ("\n" + text).split("\n## ")[1:]
        return ["## " + p for p in parts]

    produced = {sec.splitlines()[0] for sec in sections(new)}
    return [sec for sec in sections(old) if sec.splitlines()[0] not in produced]


def register(subparsers) -> None:
    from flowdsl.cliargs import batch_size, int_list, int_range, positive_int, steps, thread_count
    from flowdsl.runtime.bench.peers_runs import TABULAR_SETS, TOY_SETS

    PEER_DATA = TABULAR_SETS + TOY_SETS
    PEER_FAMILIES = ("nsf", "affine", "maf", "maf_spline")

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
    b.add_argument(
        "--peers-steps",
        type=steps,
        default=1000,
        help="peers: training steps of every quality run (0: speed only; default 1000)",
    )
    b.add_argument(
        "--peers-data",
        type=name_list(PEER_DATA),
        default=list(PEER_DATA),
        help=f"peers: comma list of data sets for the quality runs (default {','.join(PEER_DATA)})",
    )
    b.add_argument(
        "--peers-models",
        type=name_list(PEER_FAMILIES),
        default=list(PEER_FAMILIES),
        help="peers: comma list of model families (default nsf,affine,maf,maf_spline: NSF coupling, its affine "
        "twin, MAF affine, MAF spline)",
    )
    b.add_argument(
        "--peers-dims",
        type=int_list(int_range(2, 4096)),
        default=[64],
        help="peers: comma list of vector sizes D of the speed tables (default 64; empty: no speed tables)",
    )
    b.add_argument(
        "--peers-seeds",
        type=_seed_list,
        default=[0, 1, 2],
        help="peers: seeds of the quality runs, a comma list with ranges (0,1,2 or 0-29); the tables show means "
        "over them (default 0,1,2)",
    )
    b.add_argument(
        "--peers-same-start",
        action="store_true",
        help="peers: also train flowdsl's NSF and MAF models from zuko's initial weights of each seed (the "
        "implementations compared with the initial draw taken out)",
    )
    b.add_argument("--peers-batch", type=batch_size, default=256, help="peers: batch of the timed calls (default 256)")
    b.add_argument(
        "--peers-train-batch", type=batch_size, default=256, help="peers: batch of the quality runs (default 256)"
    )
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


if __name__ == "__main__":  # the probes run in fresh processes
    if len(sys.argv) == 3 and sys.argv[1] == "--spec-probe":
        print(json.dumps(_spec_probe(json.loads(sys.argv[2]))))
    else:
        print("usage: flowdsl bench SPEC... (this module's own entry point is internal)", file=sys.stderr)
        sys.exit(2)
