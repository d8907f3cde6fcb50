"""Command-line glue for ``flowdsl train`` and ``flowdsl sample``.

``register(subparsers)`` adds both subcommands to an ``argparse`` subparsers object; each sets
``func`` to a handler ``(args) -> int`` that raises :class:`flowdsl.errors.FlowDSLError` for user
errors (the caller renders them). Both dispatch through the objective registry
(:mod:`flowdsl.runtime.objectives`) by the objective of the spec (``train``) or of the spec stored
in the run (``sample``): the flags here are common to every objective, each objective adds its
own in a group of its own (a flag of another objective is an error), and the objectives'
own subcommands are added too. ``main(argv)`` runs the same parser standalone:
``python -m flowdsl.runtime.training train SPEC ...`` (also under ``torchrun ... -m``).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Optional, Sequence

__all__ = ["register", "add_train_arguments", "add_sample_arguments", "cmd_train", "cmd_sample", "main"]

# flag name -> TrainConfig field (type conversions by argparse)
_TRAIN_FLAGS = (
    ("--batch", "batch", int, "global batch size (all processes together)"),
    ("--lr", "lr", float, "peak learning rate (AdamW)"),
    ("--seed", "seed", int, "random seed (initialisation, batches, noise)"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay on weight matrices and kernels"),
    ("--warmup", "warmup", int, "linear learning-rate warm-up steps"),
    ("--clip", "clip", float, "maximum global gradient norm"),
    ("--eval-every", "eval_every", int, "steps between validation/test evaluations"),
    ("--checkpoint-every", "checkpoint_every", int, "steps between checkpoints"),
    ("--test-batch", "test_batch", int, "batch size for evaluation"),
    ("--schedule", "schedule", str, "learning-rate schedule after warm-up: cosine (default) or constant"),
    (
        "--val-fraction",
        "val_fraction",
        float,
        "share of the train split held out for checkpoint selection (default 0.1)",
    ),
    ("--threads", "threads", int, "intra-op threads per process (default 1)"),
    ("--max-time", "max_time", float, "stop after this many seconds (the run ends early, with checkpoints)"),
    ("--log-every", "log_every", int, "steps between metrics rows"),
    ("--sample-n", "sample_n", int, "samples written to samples.png at the end (0: none)"),
)


def _train_types() -> dict:
    """Validated flag types (flowdsl.cliargs), by TrainConfig field: the ranges of the language's
    ``train(...)`` (flowdsl.schema.TrainSpec) and of TrainConfig.validate; sizes by LIMITS."""
    from flowdsl.cliargs import (
        batch_size,
        float_range,
        nonnegative_float,
        nonnegative_int,
        positive_float,
        positive_int,
        sample_count_or_zero,
        seed,
        thread_count,
    )

    return {
        "batch": batch_size,
        "lr": positive_float(maximum=10.0),
        "seed": seed,
        "weight_decay": nonnegative_float(),
        "warmup": nonnegative_int(),
        "clip": positive_float(),
        "eval_every": positive_int(),
        "checkpoint_every": positive_int(),
        "test_batch": batch_size,
        "val_fraction": float_range(0.0, 1.0, open_max=True),
        "threads": thread_count,
        "max_time": nonnegative_float(),
        "log_every": nonnegative_int(),
        "sample_n": sample_count_or_zero,
    }


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from flowdsl.cliargs import nonnegative_int, steps
    from flowdsl.runtime.training.device import add_device_argument, add_precision_argument

    p.add_argument("spec", metavar="SPEC|RUN", help="spec file (.flow), or with --resume a run folder")
    p.add_argument(
        "--data",
        default=None,
        metavar="NAME|PATH",
        help="data set name or path (default: the spec's train(data=...); the list is below)",
    )
    p.add_argument(
        "--steps",
        type=steps,
        default=None,
        metavar="N",
        help="number of updates (default: the spec's train(steps=...))",
    )
    p.add_argument("--out", "-o", default=None, metavar="RUN", help="run folder (default: runs/<flow name>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a run from its last checkpoint: the run folder (or SPEC with --out RUN); never a fresh start",
    )
    p.add_argument("--overwrite", action="store_true", help="start again in a run folder that holds a checkpoint")
    p.add_argument(
        "--override-settings",
        action="store_true",
        help="with --resume: allow settings that change what the run trains (data, batch, lr, seed, ...); "
        "the change is recorded in the run",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    types = _train_types()
    p.add_argument(
        "--eval-max",
        dest="eval_max",
        type=nonnegative_int(),
        default=None,
        metavar="N",
        help="score at most N validation and N test examples at each evaluation during the run "
        "(default 0: all; the final report scores the whole test split)",
    )
    for flag, dest, typ, text in _TRAIN_FLAGS:
        extra = (
            {"choices": ("cosine", "constant")}
            if dest == "schedule"
            else {"metavar": "N" if typ is int else ("X" if typ is float else None)}
        )
        p.add_argument(
            flag,
            dest=dest,
            type=types.get(dest, typ),
            default=None,
            help=text,
            **{k: v for k, v in extra.items() if v is not None},
        )
    add_device_argument(p)
    add_precision_argument(p)


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    from flowdsl.cliargs import sample_count, seed
    from flowdsl.runtime.training.device import add_device_argument

    p.add_argument("run", metavar="RUN|CKPT", help="run folder (uses best.pt) or checkpoint file (.pt, .safetensors)")
    from flowdsl.compiler.limits import LIMITS

    p.add_argument(
        "--n",
        "-n",
        type=sample_count,
        default=64,
        metavar="N",
        help=f"number of samples, 1 to {LIMITS.max_samples:,} (default 64; drawn in bounded chunks)",
    )
    p.add_argument(
        "-o",
        "--out",
        default="grid.png",
        metavar="FILE",
        help="output by suffix: .png picture (default grid.png), .svg/.pdf vector figure, .npy raw samples, "
        ".npz samples and log_prob; anything else is refused",
    )
    p.add_argument("--seed", type=seed, default=0, help="sampling seed")
    p.add_argument(
        "--data",
        default=None,
        metavar="NAME|PATH",
        help="vector flows: data drawn under the samples (default: the run's; 'none': no data)",
    )
    add_device_argument(p)


def cmd_train(args: argparse.Namespace) -> int:
    from flowdsl.errors import FlowDSLError
    from flowdsl.runtime.objectives.registry import objective_options, train
    from flowdsl.runtime.training.models import ModelFactory, as_spec
    from flowdsl.runtime.training.run_folder import spec_of_run_folder

    out = args.out
    found = spec_of_run_folder(args.spec, out, args.resume)  # flowdsl train RUN --resume
    if found is not None:
        spec, out = found
    else:
        spec = as_spec(args.spec, ModelFactory())
    name = getattr(getattr(spec, "objective", None), "name", None) or "mle"
    overrides = {dest: getattr(args, dest, None) for _, dest, _, _ in _TRAIN_FLAGS}
    overrides["eval_max"] = args.eval_max
    overrides.update(objective_options(args, name, "train", args.spec))
    overrides.update(device=args.device, precision=args.precision)
    if args.override_settings:
        if name != "mle":
            raise FlowDSLError(
                f"--override-settings applies to objective mle; {args.spec} has objective {name}", filename=args.spec
            )
        overrides["override_settings"] = True
    train(
        spec,
        data=args.data,
        steps=args.steps,
        out=out,
        resume=args.resume,
        overwrite=args.overwrite,
        quiet=args.quiet,
        **overrides,
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import os

    from flowdsl.runtime.objectives.registry import get_objective_runtime, objective_options, run_objective

    if args.n < 1:
        from flowdsl.errors import FlowDSLError

        raise FlowDSLError(f"--n must be at least 1, got {args.n}", filename="sample")
    name, spec = run_objective(args.run)
    options = objective_options(args, name, "sample", str(args.run))
    options["device"] = args.device
    res = get_objective_runtime(name, spec).sample(
        args.run, args.n, out=args.out, seed=args.seed, data=args.data, **options
    )
    if int(os.environ.get("RANK", "0")) == 0 and res.get("message"):
        print(res["message"])
    return 0


def register(subparsers) -> None:
    """Add ``train`` and ``sample`` (with every objective's flags) and the objectives' own
    subcommands to an ``argparse`` subparsers object."""
    from flowdsl.runtime.data import describe_sources
    from flowdsl.runtime.objectives.registry import add_objective_arguments, objective_runtimes

    runtimes = objective_runtimes()
    how = "; ".join(f"{name}: {rt.summary}" for name, rt in runtimes.items() if rt.summary)
    p = subparsers.add_parser(
        "train",
        help="train a spec by its objective ("
        + "; ".join(f"{n.upper()}: {rt.summary}" for n, rt in runtimes.items())
        + ")",
        description=textwrap.fill(f"Train the flow of a spec file by its objective ({how}).", 79),
        epilog=describe_sources(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(p)
    add_objective_arguments(p, "train")
    p.set_defaults(func=cmd_train)
    s = subparsers.add_parser(
        "sample",
        help="draw samples from a trained run",
        description="Write samples of a trained run as a PNG (by the objective of its spec).",
    )
    add_sample_arguments(s)
    add_objective_arguments(s, "sample")
    s.set_defaults(func=cmd_sample)
    for rt in runtimes.values():
        rt.add_commands(subparsers)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from flowdsl.cliargs import FlowArgumentParser
    from flowdsl.errors import FlowDSLError

    parser = FlowArgumentParser(prog="python -m flowdsl.runtime.training")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FlowDSLError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
