"""Warm ``flowdsl.parse`` time against spec size (front end only: parameter counting stubbed).

    .venv/bin/python scripts/profile_parse.py                  # table: 10/100/1000/5000 layers
    .venv/bin/python scripts/profile_parse.py --sizes 1000 5000 --shapes flat
    .venv/bin/python scripts/profile_parse.py --profile glow:5000 [--sort tottime] [--top 30]
    .venv/bin/python scripts/profile_parse.py --count-params   # keep the real parameter counting

Spec shapes (each expands to exactly N layers):
    glow    ``repeat k { actnorm  conv1x1(param=lu)  coupling(hidden=64) }`` on an image input
    flat    N written layer lines
    blocks  a block ``step`` of three layers called N/3 times (each call on its own line)
    chain   a chain of blocks b0 -> b1 -> ... each calling the next (deep inlining), plus flat lines

Where the shape pass still has ``count_params`` (building each module on the meta device), it is
replaced by ``lambda ...: 0`` unless ``--count-params`` is given, so the table shows the rest of
the front end (parameter counting by per-kind formulas has no such function and is kept). Each
entry is the median of several warm parses (the grammar and the kinds are loaded by a first
parse).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time

HEADER = "input image(channels=4, height=8, width=8, levels=256)\n    dequantize uniform\n"
FOOTER = "    prior gaussian\n    objective mle\n"
STEP = ("actnorm", "conv1x1(param=lu)", "coupling(hidden=64)")


def _fill(n: int) -> list[str]:
    """n layer lines cycling through the three Glow step layers."""
    return [f"    {STEP[i % 3]}" for i in range(n)]


def spec_glow(n: int) -> str:
    k, rest = divmod(n, 3)
    body = [f"    repeat {k} {{ actnorm  conv1x1(param=lu)  coupling(hidden=64) }}"] if k else []
    return "flow glow {\n    " + HEADER + "\n".join(body + _fill(rest)) + "\n" + FOOTER + "}\n"


def spec_flat(n: int) -> str:
    return "flow flat {\n    " + HEADER + "\n".join(_fill(n)) + "\n" + FOOTER + "}\n"


def spec_blocks(n: int) -> str:
    k, rest = divmod(n, 3)
    block = "block step(hidden=64) {\n    actnorm\n    conv1x1(param=lu)\n    coupling(hidden=$hidden)\n}\n"
    calls = ["    step(hidden=64)"] * k
    return block + "flow blocks {\n    " + HEADER + "\n".join(calls + _fill(rest)) + "\n" + FOOTER + "}\n"


def spec_chain(n: int, depth: int | None = None) -> str:
    """``depth`` blocks b0 -> b1 -> ... -> b{depth-1} (the last holds one actnorm), called once."""
    depth = min(n, 1000) if depth is None else depth
    blocks = [f"block b{i} {{ b{i + 1} }}" for i in range(depth - 1)] + [f"block b{depth - 1} {{ actnorm }}"]
    return (
        "\n".join(blocks)
        + "\nflow chain {\n    "
        + HEADER
        + "    b0\n"
        + "\n".join(_fill(n - 1))
        + "\n"
        + FOOTER
        + "}\n"
    )


SHAPES = {"glow": spec_glow, "flat": spec_flat, "blocks": spec_blocks, "chain": spec_chain}


def stub_count_params() -> bool:
    """Replace the shape pass's meta-device ``count_params`` (if it has one) by ``lambda: 0``."""
    from flowdsl.compiler.passes import shapes

    if not hasattr(shapes, "count_params"):
        return False
    shapes.count_params = lambda *a, **k: 0
    return True


def time_parse(text: str, budget: float = 3.0, max_runs: int = 15, clock=time.perf_counter) -> tuple[float, int]:
    """Median seconds of warm parses (at least 3 runs, more while within ``budget``)."""
    import flowdsl

    times = []
    start = time.perf_counter()
    while len(times) < 3 or (len(times) < max_runs and time.perf_counter() - start < budget):
        t0 = clock()
        spec = flowdsl.parse(text)
        times.append(clock() - t0)
    return statistics.median(times), len(list(spec.iter_layers()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 5000])
    ap.add_argument("--shapes", nargs="+", default=["glow", "flat", "blocks", "chain"], choices=sorted(SHAPES))
    ap.add_argument(
        "--profile", metavar="SHAPE:N", help="run cProfile over warm parses of one spec instead of the table"
    )
    ap.add_argument("--sort", default="cumulative", help="pstats sort key (cumulative, tottime, ...)")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3, help="parses under --profile")
    ap.add_argument("--count-params", action="store_true", help="keep the real count_params (meta-device modules)")
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall time, or this process's CPU time (steadier on a busy machine)",
    )
    args = ap.parse_args(argv)

    import flowdsl

    stubbed = not args.count_params and stub_count_params()
    flowdsl.parse(spec_glow(10))  # warm: grammar, kinds

    if args.profile:
        shape, _, n = args.profile.partition(":")
        text = SHAPES[shape](int(n or 1000))
        flowdsl.parse(text)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.runs):
            flowdsl.parse(text)
        prof.disable()
        pstats.Stats(prof, stream=sys.stdout).sort_stats(args.sort).print_stats(args.top)
        return 0

    sizes = args.sizes
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"warm flowdsl.parse, median {args.clock} ms ({'stubbed' if stubbed else 'real'} parameter counting)")
    head = f"{'shape':8}" + "".join(f"{n:>10}" for n in sizes)
    ratio = 1000 in sizes and 5000 in sizes
    print(head + ("  5000/1000" if ratio else ""))
    for shape in args.shapes:
        row = {}
        for n in sizes:
            text = SHAPES[shape](n)
            try:
                flowdsl.parse(text)
            except Exception as e:  # e.g. RecursionError: shown in the table
                row[n] = type(e).__name__[:9]
                continue
            t, n_layers = time_parse(text, clock=clock)
            assert n_layers == n, (shape, n, n_layers)
            row[n] = t * 1000
        line = f"{shape:8}" + "".join(
            f"{row[n]:10.1f}" if isinstance(row[n], float) else f"{row[n]:>10}" for n in sizes
        )
        if ratio and all(isinstance(row[n], float) for n in (1000, 5000)):
            line += f"  {row[5000] / row[1000]:9.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
