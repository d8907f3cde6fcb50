"""Likelihood benchmark: test bits/dim after a fixed step budget, next to reference densities.

For every digits spec of a layer family that has landed (Glow 1×1, emerging, periodic,
butterfly, RG-Flow, RealNVP checkerboard), train with the same step budget and report the test
bits/dim of the validation-selected weights. The reference densities (uniform, full-covariance
Gaussian, 5-component Gaussian mixture, per-pixel histograms) are computed in the same run on
the same split (``runtime/training/baselines.py``). Optionally an MNIST Glow, when MNIST-format
IDX files are available offline (see ``runtime/data/README.md``). Then the spike-and-slab
comparison (:mod:`flowdsl.runtime.bench.sparsity`: gaussian, laplace and spike_slab priors on one
architecture; ``--sparsity-steps``, ``--only sparsity``).

    flowdsl bench-training --steps 3000 --out benchmarks/training.md [--mnist-steps 6000]

Conditional rows (``cglow_digits``, ``cinn_digits``) report conditional test bits/dim; the
conditional section after the table (:mod:`flowdsl.runtime.bench.conditional`) compares
``cglow_digits`` with ``glow_digits`` at the same budget, classifies its samples with a separately
trained digits classifier, and measures the expected KL of the conditional 2-D toy.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["training_table", "register"]

DIGITS_SPECS = (
    "glow_digits.flow",
    "cglow_digits.flow",
    "emerging_glow_digits.flow",
    "periodic_digits.flow",
    "butterfly_digits.flow",
    "rgflow_digits.flow",
    "realnvp_checkerboard_digits.flow",
    "cinn_digits.flow",
)
#: conditional specs: their test bits/dim are conditional (of log p(x | context))
CONDITIONAL_NOTES = {
    "cglow_digits.flow": "conditional: given the class",
    "cinn_digits.flow": "conditional: given the 4×4 low-resolution image",
}

MNIST_SPEC = """
# A small multi-scale Glow for MNIST (28x28 padded to 32x32 by the loader), benchmark only.
block step(hidden=64) {
    actnorm
    conv1x1(param=lu)
    coupling(kind=affine, hidden=$hidden, net=conv, depth=2)
}
flow glow_mnist {
    input image(channels=1, height=32, width=32, levels=256)
    squeeze repeat 4 { step } split
    squeeze repeat 4 { step } split
    squeeze repeat 4 { step }
    prior gaussian(learned=true)
    train(data=mnist, batch=64, lr=1e-3, steps=6000, seed=0, weight_decay=1e-5, eval_every=1000, test_batch=500)
}
"""


def _digits_baselines() -> dict[str, float]:
    from flowdsl.runtime.data.digits import digits_arrays
    from flowdsl.runtime.training.baselines import baseline_bpd

    tr, _ = digits_arrays("train")
    te, _ = digits_arrays("test")
    return baseline_bpd(tr.reshape(len(tr), -1), te.reshape(len(te), -1), 17)


def training_table(
    steps: int,
    out_dir: str | Path,
    specs: tuple[str, ...] = DIGITS_SPECS,
    mnist_steps: int = 0,
    quiet: bool = True,
    conditional: bool = True,
    toy_steps: int = 0,
    reuse: bool = False,
) -> str:
    """Train each spec for ``steps`` updates; return a markdown report with the tables (and, with
    ``conditional``, the conditional benchmarks of :mod:`flowdsl.runtime.bench.conditional`, the toy
    trained for ``toy_steps``, 0: its spec's steps). ``reuse``: a run folder in ``out_dir`` that
    already finished this spec (same spec text) with ``steps`` steps is reported instead of retrained."""
    import flowdsl
    from flowdsl.runtime.training import train
    from flowdsl.runtime.training.demo import bundled_specs

    out_dir = Path(out_dir)
    available = {p.name: p for p in bundled_specs()}
    base = _digits_baselines()
    rows = []
    runs: dict[str, dict] = {}
    for name in specs:
        if name not in available:
            continue
        spec = flowdsl.load(available[name])
        t0 = time.time()
        s = _finished(out_dir / spec.name, spec, steps) if reuse else None
        if s is None:
            s = train(spec, steps=steps, out=out_dir / spec.name, overwrite=True, quiet=quiet, sample_n=16)
        else:
            t0 -= float(s["seconds"])  # the wall time of the run reused
        runs[name] = {"summary": s, "out": out_dir / spec.name}
        rows.append(
            (
                name,
                sum(p.numel() for p in flowdsl.compile(spec).parameters()),
                s["test_bpd"],
                s["best_step"],
                time.time() - t0,
            )
        )
    lines = [
        f"### Digits (1×8×8, 17 levels): test bits/dim after {steps} steps",
        "",
        "Fixed split of scikit-learn's digits (1,500 train of which 10 % validation, 297 test); weights selected on",
        "the validation split; 1 process, 1 thread, batch and learning rate from each spec.",
        "",
        "| model | parameters | test bits/dim | best step | wall time |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, params, bpd, best, secs in rows:
        note = f" ({CONDITIONAL_NOTES[name]})" if name in CONDITIONAL_NOTES else ""
        lines.append(f"| `specs/{name}`{note} | {params:,} | **{bpd:.3f}** | {best} | {secs:.0f} s |")
    labels = {
        "uniform": "uniform (log2 17)",
        "gaussian": "full-covariance Gaussian",
        "gmm5": "5-component full-covariance mixture",
        "histogram": "independent per-pixel histograms",
    }
    for key in ("uniform", "gaussian", "gmm5", "histogram"):
        if key in base:
            lines.append(f"| reference: {labels[key]} | — | {base[key]:.3f} | — | — |")
    if conditional:
        from flowdsl.runtime.bench.conditional import conditional_section

        lines += ["", *conditional_section(out_dir, runs, toy_steps=toy_steps, quiet=quiet, reuse=reuse)]
    if mnist_steps > 0:
        lines += ["", *mnist_table(mnist_steps, out_dir, quiet)]
    return "\n".join(lines) + "\n"


def _finished(run: Path, spec, steps: int) -> dict | None:
    """The summary of a run in ``run`` that trained ``spec`` (same text) for ``steps`` steps to
    the end, or None."""
    import json

    from flowdsl.runtime.training.models import spec_sha256

    try:
        s = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = s.get("spec_sha256") == spec_sha256(spec) and s.get("step") == steps == s.get("steps")
    return s if ok and not s.get("stopped_early") else None


def mnist_table(steps: int, out_dir: Path, quiet: bool = True) -> list[str]:
    import flowdsl
    from flowdsl.errors import DataError
    from flowdsl.runtime.training import train

    spec = flowdsl.parse(MNIST_SPEC, filename="<bench: glow_mnist>")
    try:
        t0 = time.time()
        s = train(spec, steps=steps, out=out_dir / "glow_mnist", overwrite=True, quiet=quiet, sample_n=16)
    except DataError as e:
        return ["### MNIST", "", f"not run: {e.message}"]
    params = sum(p.numel() for p in flowdsl.compile(spec).parameters())
    return [
        f"### MNIST (1×28×28 padded to 32×32, 256 levels): a small Glow after {steps} steps",
        "",
        "| model | parameters | steps × batch | test bits/dim | wall time |",
        "|---|---:|---:|---:|---:|",
        f"| 3-scale Glow, 4 steps per scale, hidden 64 | {params:,} | {steps} × 64 | **{s['test_bpd']:.3f}** | "
        f"{time.time() - t0:.0f} s |",
        "",
        "Published small flows reach about 1.02–1.08 bits/dim after ~200 GPU epochs; this run is "
        f"{steps * 64 / 60000:.1f} epochs on 2 CPU cores. "
        "The padding pixels (always 0) lower the per-dimension figure.",
    ]


def _cmd(args) -> int:
    from flowdsl.outputs import atomic_write_text, check_output_path

    if args.out:  # refused before the runs, not after
        check_output_path(args.out, what="benchmark report")
    specs = DIGITS_SPECS
    if args.specs:
        specs = tuple(s if s.endswith(".flow") else s + ".flow" for s in args.specs.split(",") if s)
        unknown = [s for s in specs if s not in DIGITS_SPECS]
        if unknown:
            from flowdsl.errors import FlowDSLError

            raise FlowDSLError(
                f"--specs: not a digits spec of the benchmark: {', '.join(unknown)} (known: {', '.join(DIGITS_SPECS)})",
                filename="bench-training",
            )
    md = ""
    if args.only in (None, "likelihood"):
        md = training_table(
            args.steps,
            args.runs,
            specs=specs,
            mnist_steps=args.mnist_steps,
            quiet=not args.verbose,
            conditional=args.conditional,
            toy_steps=args.toy_steps,
            reuse=args.reuse,
        )
    sparsity_steps = args.steps if args.sparsity_steps is None else args.sparsity_steps
    if args.only in (None, "sparsity") and sparsity_steps > 0:
        from flowdsl.runtime.bench.sparsity import sparsity_table

        md += ("\n" if md else "") + sparsity_table(
            sparsity_steps, args.runs, mnist_steps=args.sparsity_mnist_steps, quiet=not args.verbose
        )
    print(md)
    if args.out:
        cmd = f"flowdsl bench-training --steps {args.steps} --mnist-steps {args.mnist_steps}"
        cmd += f" --specs {args.specs}" if args.specs else ""
        cmd += f" --toy-steps {args.toy_steps}" if args.toy_steps else ""
        cmd += "" if args.conditional else " --no-conditional"
        cmd += " --reuse" if args.reuse else ""
        cmd += f" --out {args.out}"
        if args.only:
            cmd += f" --only {args.only}"
        if args.sparsity_steps is not None:
            cmd += f" --sparsity-steps {args.sparsity_steps}"
        if args.sparsity_mnist_steps:
            cmd += f" --sparsity-mnist-steps {args.sparsity_mnist_steps}"
        atomic_write_text(args.out, f"Produced by `{cmd}`.\n\n" + md, what="benchmark report")
    return 0


def register(subparsers) -> None:
    import argparse

    from flowdsl.cliargs import nonnegative_int, steps

    p = subparsers.add_parser(
        "bench-training", help="test bits/dim of every digits spec after a fixed step budget, with reference densities"
    )
    p.add_argument("--steps", type=steps, default=3000, help="training steps of every digits spec (default 3000)")
    p.add_argument(
        "--mnist-steps",
        type=steps,
        default=0,
        help="also train a small MNIST Glow (needs the IDX files, see runtime/data/README.md)",
    )
    p.add_argument(
        "--specs",
        default=None,
        metavar="A,B",
        help="only these digits specs (comma-separated file names, e.g. glow_digits,cglow_digits; default: all)",
    )
    p.add_argument(
        "--conditional",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the conditional benchmarks: cglow_digits against glow_digits, its samples classified, and the "
        "conditional 2-D toy's expected KL (default on)",
    )
    p.add_argument(
        "--toy-steps",
        type=nonnegative_int(),
        default=0,
        metavar="N",
        help="training steps of the conditional 2-D toy (default 0: its spec's)",
    )
    p.add_argument(
        "--sparsity-steps",
        type=steps,
        default=None,
        help="steps of each prior (gaussian, laplace, spike_slab) in the spike-and-slab comparison "
        "(default: --steps; 0 skips it)",
    )
    p.add_argument(
        "--sparsity-mnist-steps",
        type=steps,
        default=0,
        help="also compare the three priors on MNIST (needs the IDX files, see runtime/data/README.md)",
    )
    p.add_argument(
        "--only",
        choices=("likelihood", "sparsity"),
        default=None,
        help="run only the likelihood table of the digits specs, or only the spike-and-slab comparison",
    )
    p.add_argument("--runs", default="runs/bench_training", help="folder for the training runs")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="report a run already in --runs that finished the same spec text with --steps steps instead of "
        "training it again (its own wall time is shown)",
    )
    p.add_argument("--out", default=None, help="write the markdown report here (e.g. benchmarks/training.md)")
    p.add_argument("--verbose", action="store_true", help="show the training runs' progress")
    p.set_defaults(func=_cmd)
