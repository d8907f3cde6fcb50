#!/usr/bin/env python3
"""Time two flowdsl trees side by side (e.g. before and after a restructuring) on glow_cifar.

    python scripts/compare_speed.py --before /path/before/.venv/bin/python \
                                    --after  /path/after/.venv/bin/python \
                                    [--rounds 10] [--calls 5] [--batch 64] [--threads 2]
                                    [--compile-timeout 300] [--no-compile] [--compile-rounds 3]
                                    [--cold-rounds 5]

Each python runs this file as a long-lived worker (``--worker``) in its own tree (the folder that
holds ``.venv``), talking JSON lines over stdin/stdout. A worker builds the model once: the spec's
seed (``flowdsl.compile``), data-dependent initialisation on ``torch.rand`` of a fixed generator
(train mode, then eval), then ``randomize_parameters(scale=0.1, seed=0)`` as ``flowdsl bench`` does;
``torch.set_num_threads(threads)``. Variants timed (each call under ``torch.no_grad``):

    eager log_prob            model.log_prob(x)
    fused log_prob            fused.log_prob(x), fused = model.fuse()
    fused sample              fused.sample(batch)
    compiled fused log_prob   torch.compile(fused.log_prob, fullgraph=True, dynamic=False,
                              options={"freezing": True}) (as ``flowdsl bench``); skipped for both
                              trees if either does not compile within --compile-timeout seconds
    parse (warm)              flowdsl.parse(text of the spec), after a warm-up parse
    flowdsl.compile           flowdsl.compile(spec) (lowering and parameter initialisation)
    model.fuse()              the fusion passes

Every round runs every variant in both workers, one after the other (the order of the trees flips
each round; the idle worker waits on its pipe), ``--calls`` timed calls each after one untimed
call; a round's time is the median of its calls. Reported: the median over rounds per tree and
the median of the per-round after/before ratios (< 1: after is faster). Then, with the workers
gone, ``--compile-rounds`` cold compiles in fresh workers (alternating; each worker gets a fresh
``TORCHINDUCTOR_CACHE_DIR``, so neither tree warms the other's cache), and then
``python -m flowdsl check <cold spec>`` and ``python -c "import lark, pydantic, networkx"`` in
fresh interpreters of each tree, alternating, ``--cold-rounds`` rounds after one warm-up each.
The load average is printed at the start and at the end. Output is markdown.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics as st
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = "specs/glow_cifar.flow"
COLD_SPEC = "specs/glow_digits.flow"
VARIANTS = ["eager log_prob", "fused log_prob", "fused sample", "compiled fused log_prob", "parse (warm)",
            "flowdsl.compile", "model.fuse()"]


# ---------------------------------------------------------------------------------------------
# worker
# ---------------------------------------------------------------------------------------------
def worker(spec_path: str, batch: int, threads: int) -> int:
    import torch

    import flowdsl

    try:
        from flowdsl.runtime.training.demo import randomize_parameters
    except ImportError:
        from flowdsl.runtime.demo import randomize_parameters

    torch.set_num_threads(threads)
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the library prints must not reach the protocol pipe

    def reply(obj: dict) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    text = Path(spec_path).read_text()
    t0 = time.perf_counter()
    spec = flowdsl.parse(text, filename=spec_path)
    model = flowdsl.compile(spec)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *model.input_shape, generator=gen)
    model.train()
    with torch.no_grad():
        model(x)  # data-dependent initialisation
        randomize_parameters(model, scale=0.1, seed=0)
    model.eval()
    fused = model.fuse()
    with torch.no_grad():
        ref = model.log_prob(x)
        fref = fused.log_prob(x)
    build_s = time.perf_counter() - t0
    fns = {
        "eager log_prob": lambda: model.log_prob(x),
        "fused log_prob": lambda: fused.log_prob(x),
        "fused sample": lambda: fused.sample(batch),
        "parse (warm)": lambda: flowdsl.parse(text, filename=spec_path),
        "flowdsl.compile": lambda: flowdsl.compile(spec),
        "model.fuse()": lambda: model.fuse(),
    }
    reply({"ready": True, "flowdsl": flowdsl.__file__, "torch": torch.__version__, "threads": threads,
           "build_s": build_s, "params": sum(p.numel() for p in model.parameters()),
           "finite": bool(torch.isfinite(ref).all()), "fused_vs_eager": float((fref - ref).abs().max())})
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "compile":
            torch._dynamo.reset()
            c_lp = torch.compile(fused.log_prob, fullgraph=True, dynamic=False, options={"freezing": True})
            t = time.perf_counter()
            with torch.no_grad():
                y = c_lp(x)
            compile_s = time.perf_counter() - t
            fns["compiled fused log_prob"] = lambda: c_lp(x)
            stats = dict(torch._dynamo.utils.counters.get("stats", {}))
            reply({"compile_s": compile_s, "vs_fused": float((y - fref).abs().max()),
                   "unique_graphs": stats.get("unique_graphs"), "calls_captured": stats.get("calls_captured"),
                   "graph_breaks": sum(torch._dynamo.utils.counters.get("graph_break", {}).values())})
        elif req["cmd"] == "time":
            fn = fns[req["variant"]]
            times = []
            with torch.no_grad():
                fn()  # untimed call
                for _ in range(req["n"]):
                    t = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t)
            reply({"times": times})
        elif req["cmd"] == "quit":
            break
    return 0


# ---------------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------------
def _tree_of(py: str) -> Path:
    p = Path(py).absolute()  # not resolve(): a venv's python is a symlink to the system one
    if p.parent.name == "bin" and p.parent.parent.name == ".venv":
        return p.parents[2]
    raise SystemExit(f"cannot tell the tree of {py}: pass --before-tree/--after-tree")


class Worker:
    def __init__(self, name: str, py: str, tree: Path, args: argparse.Namespace) -> None:
        self.name, self.py, self.tree = name, py, tree
        cmd = [py, str(Path(__file__).absolute()), "--worker", "--spec", args.spec, "--batch", str(args.batch),
               "--threads", str(args.threads)]
        # a fresh inductor cache per worker: the first tree's compile must not warm the second's
        self.cache = tempfile.mkdtemp(prefix=f"compare_speed_{name}_inductor_")
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=self.cache)
        self.proc = subprocess.Popen(cmd, cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def read(self, timeout: float | None = None) -> dict | None:
        if timeout is not None:
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            if not ready:
                return None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name} worker exited (code {self.proc.wait()})")
        return json.loads(line)

    def ask(self, timeout: float | None = None, **req) -> dict | None:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.cache, ignore_errors=True)


def _loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _fmt_ms(v: float) -> str:
    return f"{v * 1000:.2f}" if v < 0.01 else f"{v * 1000:.1f}"


def _iqr(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = st.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def _cold(trees: dict[str, tuple[str, Path]], rounds: int, spec: str) -> dict[str, dict[str, list[float]]]:
    def run(py: str, tree: Path, kind: str) -> float:
        cmd = [py, "-m", "flowdsl", "check", spec] if kind == "check" else \
              [py, "-c", "import lark, pydantic, networkx"]
        t = time.perf_counter()
        subprocess.run(cmd, cwd=tree, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t

    res: dict[str, dict[str, list[float]]] = {n: {"check": [], "libs": []} for n in trees}
    names = list(trees)
    for n in names:  # warm-up: bytecode caches, the page cache
        for kind in ("check", "libs"):
            run(*trees[n], kind)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for kind in ("check", "libs"):
            for n in order:
                res[n][kind].append(run(*trees[n], kind))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before")
    ap.add_argument("--after")
    ap.add_argument("--before-tree", default=None)
    ap.add_argument("--after-tree", default=None)
    ap.add_argument("--spec", default=SPEC)
    ap.add_argument("--cold-spec", default=COLD_SPEC)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--cold-rounds", type=int, default=5)
    ap.add_argument("--compile-timeout", type=float, default=300.0)
    ap.add_argument("--compile-rounds", type=int, default=3,
                    help="cold torch.compile timings in fresh workers, alternating (0: none)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.spec, args.batch, args.threads)
    if not (args.before and args.after):
        ap.error("--before and --after are required")
    trees = {"before": (args.before, Path(args.before_tree) if args.before_tree else _tree_of(args.before)),
             "after": (args.after, Path(args.after_tree) if args.after_tree else _tree_of(args.after))}
    load_start = _loadavg()
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731 - progress
    workers: dict[str, Worker] = {}
    info: dict[str, dict] = {}
    try:
        for n, (py, tree) in trees.items():  # one after the other: builds do not compete
            workers[n] = Worker(n, py, tree, args)
            info[n] = workers[n].read()
            say(f"{n}: built in {info[n]['build_s']:.1f} s ({info[n]['flowdsl']})")
        variants = [v for v in VARIANTS if v != "compiled fused log_prob"]
        if not args.no_compile:
            for n, w in workers.items():
                r = w.ask(timeout=args.compile_timeout, cmd="compile")
                if r is None:  # too slow: skip compile in both trees, with fresh workers
                    say(f"{n}: torch.compile did not finish in {args.compile_timeout:.0f} s: compile skipped")
                    for m in list(workers):
                        workers[m].proc.kill()
                        workers[m].proc.wait()
                        workers[m].close()  # removes its inductor cache
                        workers[m] = Worker(m, *trees[m], args)
                        info[m] = workers[m].read()
                    break
                info[n].update(r)
                say(f"{n}: compiled in {r['compile_s']:.1f} s")
            else:
                variants.insert(3, "compiled fused log_prob")
        times: dict[str, dict[str, list[float]]] = {v: {"before": [], "after": []} for v in variants}
        mins: dict[str, dict[str, list[float]]] = {v: {"before": [], "after": []} for v in variants}
        names = list(workers)
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for v in variants:
                for n in order:
                    t = workers[n].ask(cmd="time", variant=v, n=args.calls)["times"]
                    times[v][n].append(st.median(t))
                    mins[v][n].append(min(t))
            say(f"round {r + 1}/{args.rounds} done (load {_loadavg()})")
    finally:
        for w in workers.values():
            w.close()
    compiles: dict[str, list[dict]] = {"before": [], "after": []}
    if "compiled fused log_prob" in variants:
        for r in range(args.compile_rounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                w, res = Worker(n, *trees[n], args), None
                try:
                    w.read()
                    res = w.ask(timeout=args.compile_timeout, cmd="compile")
                finally:
                    if w.proc.poll() is None and res is None:
                        w.proc.kill()
                        w.proc.wait()
                    w.close()
                if res is not None:
                    compiles[n].append(res)
                    say(f"cold compile {r + 1}/{args.compile_rounds}, {n}: {res['compile_s']:.1f} s")
    load_mid = _loadavg()
    say(f"cold check: {args.cold_rounds} rounds")
    cold = _cold(trees, args.cold_rounds, args.cold_spec)
    load_end = _loadavg()

    lines = [
        f"`{Path(args.spec).stem}`, batch {args.batch}, {args.threads} threads, float32, CPU; "
        f"{args.rounds} rounds × {args.calls} calls (a round's time is the median of its calls); "
        "medians over rounds [interquartile range] in ms; ratio: median of the per-round after/before ratios "
        "(< 1: after is faster). The last column uses each round's fastest call instead (less sensitive to "
        "other processes on the machine).",
        "",
        "| variant | before (ms) | after (ms) | after / before (median [IQR]) | after / before, fastest calls |",
        "|---|---:|---:|---:|---:|",
    ]
    for v in variants:
        b, a = times[v]["before"], times[v]["after"]
        ratios = [y / x for x, y in zip(b, a)]
        lo, hi = _iqr(ratios)
        bl, bh = _iqr(b)
        al, ah = _iqr(a)
        lines.append(f"| {v} | {_fmt_ms(st.median(b))} [{_fmt_ms(bl)}–{_fmt_ms(bh)}] | "
                     f"{_fmt_ms(st.median(a))} [{_fmt_ms(al)}–{_fmt_ms(ah)}] | "
                     f"{st.median(ratios):.3f} [{lo:.3f}–{hi:.3f}] | "
                     f"{st.median([y / x for x, y in zip(mins[v]['before'], mins[v]['after'])]):.3f} |")
    lines += ["", "Per-round after/before ratios:", "",
              "| variant | " + " | ".join(str(i + 1) for i in range(args.rounds)) + " |",
              "|---|" + "---:|" * args.rounds]
    for v in variants:
        ratios = [y / x for x, y in zip(times[v]["before"], times[v]["after"])]
        lines.append(f"| {v} | " + " | ".join(f"{q:.2f}" for q in ratios) + " |")
    lines += ["", "Set-up (one worker per tree):", "",
              "| | before | after |", "|---|---:|---:|",
              f"| parameters | {info['before']['params']:,} | {info['after']['params']:,} |",
              f"| build (parse, compile, init, fuse), s | {info['before']['build_s']:.2f} | "
              f"{info['after']['build_s']:.2f} |",
              f"| log_prob finite | {info['before']['finite']} | {info['after']['finite']} |",
              f"| max abs fused − eager log_prob | {info['before']['fused_vs_eager']:.2e} | "
              f"{info['after']['fused_vs_eager']:.2e} |"]
    if "compile_s" in info["before"]:
        lines += [f"| torch.compile first call (cold), s | {info['before']['compile_s']:.1f} | "
                  f"{info['after']['compile_s']:.1f} |",
                  f"| max abs compiled − fused log_prob | {info['before']['vs_fused']:.2e} | "
                  f"{info['after']['vs_fused']:.2e} |"]
    if compiles["before"] and compiles["after"]:
        k = min(len(compiles["before"]), len(compiles["after"]))
        cs = {n: [c["compile_s"] for c in compiles[n][:k]] for n in compiles}
        lines += ["", f"Cold `torch.compile` (first call of the compiled fused log_prob, fresh inductor cache) in "
                  f"fresh workers, {k} alternating rounds (the order of the trees flips each round), s:", "",
                  "| | " + " | ".join(f"round {i + 1}" for i in range(k)) + " | median | unique graphs | "
                  "graph breaks |", "|---|" + "---:|" * (k + 3)]
        for n in ("before", "after"):
            c0 = compiles[n][0]
            lines.append(f"| {n} | " + " | ".join(f"{v:.1f}" for v in cs[n]) + f" | {st.median(cs[n]):.1f} | "
                         f"{c0.get('unique_graphs')} | {c0.get('graph_breaks')} |")
        lines.append("| after / before | " + " | ".join(f"{a / b:.2f}" for b, a in zip(cs["before"], cs["after"]))
                     + f" | {st.median([a / b for b, a in zip(cs['before'], cs['after'])]):.2f} | | |")
    cb, ca = cold["before"], cold["after"]
    r_check = [y / x for x, y in zip(cb["check"], ca["check"])]
    r_libs = [y / x for x, y in zip(cb["libs"], ca["libs"])]
    lines += ["", f"Cold `python -m flowdsl check {args.cold_spec}` and `python -c \"import lark, pydantic, "
              f"networkx\"` in fresh interpreters of each tree, {args.cold_rounds} alternating rounds after "
              "one warm-up each; medians in ms:", "",
              "| command | before (ms) | after (ms) | after / before (median of per-round ratios) |",
              "|---|---:|---:|---:|",
              f"| `flowdsl check` | {_fmt_ms(st.median(cb['check']))} | {_fmt_ms(st.median(ca['check']))} | "
              f"{st.median(r_check):.3f} |",
              f"| `import lark, pydantic, networkx` | {_fmt_ms(st.median(cb['libs']))} | "
              f"{_fmt_ms(st.median(ca['libs']))} | {st.median(r_libs):.3f} |",
              f"| check ÷ imports | {st.median(cb['check']) / st.median(cb['libs']):.2f}× | "
              f"{st.median(ca['check']) / st.median(ca['libs']):.2f}× | |",
              "",
              f"Load average (1, 5, 15 min): {load_start} at the start, {load_mid} after the timed rounds, "
              f"{load_end} at the end; torch {info['after']['torch']}, {os.cpu_count()} CPUs."]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
