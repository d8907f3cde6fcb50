"""Command-line glue for ``flowdsl train`` and ``flowdsl sample``.

``register(subparsers)`` adds both subcommands to an ``argparse`` subparsers object; each sets
``func`` to a handler ``(args) -> int`` that raises :class:`flowdsl.errors.FlowDSLError` for user
errors (the caller renders them). ``main(argv)`` runs the same parser standalone:
``python -m flowdsl.runtime.training train SPEC ...`` (also under ``torchrun ... -m``).
"""
from __future__ import annotations

import argparse
import sys
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
    ("--val-fraction", "val_fraction", float, "share of the train split held out for checkpoint selection (default 0.1)"),
    ("--threads", "threads", int, "intra-op threads per process (default 1)"),
    ("--max-time", "max_time", float, "stop after this many seconds (the run ends early, with checkpoints)"),
    ("--log-every", "log_every", int, "steps between metrics rows"),
    ("--sample-n", "sample_n", int, "samples written to samples.png at the end (0: none)"),
)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="spec file (.flow)")
    p.add_argument("--data", default=None, metavar="NAME|PATH", help="data set name or path (default: the spec's train(data=...))")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="number of updates (default: the spec's train(steps=...))")
    p.add_argument("--out", "-o", default=None, metavar="RUN", help="run folder (default: runs/<flow name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start again in a run folder that holds a checkpoint")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.add_argument("--invertible-memory", dest="invertible_memory", action=argparse.BooleanOptionalAction, default=None,
                   help="recompute activations from outputs in the backward pass: far less memory, ~1.4x the time per step "
                        "(one process only; a resumed run keeps the setting unless told --no-invertible-memory)")
    for flag, dest, typ, text in _TRAIN_FLAGS:
        extra = {"choices": ("cosine", "constant")} if dest == "schedule" else {"metavar": "N" if typ is int else ("X" if typ is float else None)}
        p.add_argument(flag, dest=dest, type=typ, default=None, help=text, **{k: v for k, v in extra.items() if v is not None})


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN|CKPT", help="run folder (uses best.pt) or checkpoint file (.pt, .safetensors)")
    p.add_argument("--n", "-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--temperature", "-t", type=float, default=0.7, help="prior temperature (default 0.7)")
    p.add_argument("-o", "--out", default="grid.png", help="output PNG (default grid.png)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--data", default=None, metavar="NAME|PATH", help="vector flows: data drawn under the samples (default: the run's; 'none': no data)")


def cmd_train(args: argparse.Namespace) -> int:
    from flowdsl.runtime.training.loop import train

    overrides = {dest: getattr(args, dest, None) for _, dest, _, _ in _TRAIN_FLAGS}
    overrides["invertible_memory"] = getattr(args, "invertible_memory", None)
    train(args.spec, data=args.data, steps=args.steps, out=args.out, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet, **overrides)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from flowdsl.runtime.training.sampling import sample_grid

    if args.n < 1:
        from flowdsl.errors import FlowDSLError

        raise FlowDSLError(f"--n must be at least 1, got {args.n}", filename="sample")
    res = sample_grid(args.run, n=args.n, temperature=args.temperature, out_png=args.out, seed=args.seed, data=args.data)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {res['n']} samples of {res['spec']} (step {res['step']}, temperature {res['temperature']:g}) to {res['path']}")
    return 0


def register(subparsers) -> None:
    """Add ``train`` and ``sample`` to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("train", help="train a spec by maximum likelihood", description="Train the flow of a spec file.")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)
    s = subparsers.add_parser("sample", help="draw samples from a trained run", description="Write samples of a trained flow as a PNG.")
    add_sample_arguments(s)
    s.set_defaults(func=cmd_sample)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from flowdsl.errors import FlowDSLError

    parser = argparse.ArgumentParser(prog="python -m flowdsl.runtime.training")
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
