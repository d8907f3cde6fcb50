"""``flowdsl eval RUN|CKPT --data NAME|PATH``: score a trained run on other data.

The run's model (best checkpoint of a run folder, or the checkpoint file given; its spec from the
checkpoint) scores a data set that fits the spec's input:

* images (discrete data with L levels): bits/dim = (−log p(x) + D·log L) / (D·ln 2) of the data
  dequantised as the spec says (``uniform``: fixed noise from ``--seed``; ``none``: bin centres);
* vectors: the mean negative log-likelihood −log p(x) in nats per example, and per dimension.

A conditional run (a spec with ``context``) scores −log p(x | c), each example with its context
from the data (:mod:`flowdsl.runtime.data.context`): conditional bits/dim and NLL, said so in the
output (``"context"`` in the result names the declaration).

Examples are taken in order, at most ``--eval-max``, in batches of ``--batch`` on ``--device``
(``auto``: CUDA when present), with a progress bar on a terminal (``--quiet``: none). Weights with
NaN or Inf are refused; examples whose log-density is not finite are counted and reported (the
mean is then not finite either). ``--json FILE`` also writes the result (an atomic write through
:mod:`flowdsl.outputs`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Optional

import torch

from flowdsl.wording import plural

__all__ = ["evaluate_run", "register", "cmd_eval"]


@torch.no_grad()
def evaluate_run(
    run: str | os.PathLike,
    data: Optional[str] = None,
    split: str = "test",
    batch: int = 256,
    eval_max: Optional[int] = None,
    device: str = "auto",
    seed: int = 0,
    quiet: bool = True,
    factory: Any = None,
) -> dict[str, Any]:
    """Score the model of ``run`` on ``data`` (default: the run's training data), split ``split``.

    Returns ``{"spec", "step", "checkpoint", "data", "split", "n", "nll_nats", "nll_nats_per_dim",
    "bits_per_dim" (None for real vectors), "nonfinite"}``.

    Raises:
        CheckpointError: unreadable checkpoint, or weights with NaN/Inf.
        DataError: the data cannot be loaded or does not fit the spec's input.
        FlowDSLError: ``batch`` or ``eval_max`` out of range, or a missing CUDA device.
    """
    from flowdsl.compiler.limits import LIMITS
    from flowdsl.errors import FlowDSLError
    from flowdsl.runtime.data import dequantize, load_for_spec, nats_to_bits_per_dim
    from flowdsl.runtime.training.device import resolve_device
    from flowdsl.runtime.training.evaluation import log_prob
    from flowdsl.runtime.training.models import check_finite_weights, load_model
    from flowdsl.runtime.training.sample_context import context_summary

    if not 1 <= int(batch) <= LIMITS.max_batch:
        raise FlowDSLError(f"the batch size must be between 1 and {LIMITS.max_batch:,}, got {batch}", filename="eval")
    if eval_max is not None and int(eval_max) < 1:
        raise FlowDSLError(f"--eval-max must be at least 1, got {eval_max}", filename="eval")
    dev = resolve_device(device)
    spec, model, ckpt = load_model(run, factory=factory)
    path = ckpt.get("path", os.fspath(run))
    check_finite_weights(model, path, "evaluation")
    name = data or (ckpt.get("config") or {}).get("data") or getattr(getattr(spec, "train", None), "data", None)
    ds = load_for_spec(spec, name, split, seed=int((ckpt.get("config") or {}).get("seed", 0)))
    x = ds.x if eval_max is None else ds.x[: int(eval_max)]
    c = ds.context if ds.context is None or eval_max is None else ds.context[: int(eval_max)]
    levels = ds.levels
    mode = getattr(spec, "dequantize", "uniform") if levels is not None else "none"
    gen = torch.Generator().manual_seed(int(seed))
    model = model.to(dev).eval()
    total, count, bad = 0.0, 0, 0
    bar = _Bar(len(x), f"eval {spec.name} on {name}") if not quiet and sys.stderr.isatty() else None
    try:
        for i in range(0, len(x), int(batch)):
            xb = dequantize(x[i : i + int(batch)], levels, mode, gen).to(dev)
            cb = None if c is None else c[i : i + int(batch)].to(dev)
            lp = log_prob(model, xb, cb).to(torch.float64)
            bad += int((~torch.isfinite(lp)).sum())
            total += float(lp.sum())
            count += lp.numel()
            if bar is not None:
                bar.update(lp.numel())
    finally:
        if bar is not None:
            bar.close()
    if count == 0:
        raise FlowDSLError(f"no examples to score in {name!r} ({split} split)", filename="eval")
    dims = int(math.prod(tuple(spec.input.shape)))
    nll = -total / count
    return {
        "spec": spec.name,
        "step": int(ckpt["step"]),
        "checkpoint": str(path),
        "data": str(name),
        "split": split,
        "n": count,
        "nll_nats": nll,
        "nll_nats_per_dim": nll / dims,
        "bits_per_dim": float(nats_to_bits_per_dim(nll / dims, levels)) if levels is not None else None,
        "nonfinite": bad,
        "context": context_summary(spec),
    }


class _Bar:
    """A one-line progress bar on stderr (tqdm when installed, else a plain ``\\r`` line)."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done = total, desc, 0
        try:
            from tqdm import tqdm

            self.tqdm = tqdm(total=total, unit="ex", desc=desc, dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            self.tqdm = None

    def update(self, k: int) -> None:
        self.done += k
        if self.tqdm is not None:
            self.tqdm.update(k)
            return
        frac = self.done / max(self.total, 1)
        fill = int(30 * frac)
        sys.stderr.write(f"\r{self.desc}: [{'#' * fill}{'.' * (30 - fill)}] {self.done}/{self.total} examples")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


def cmd_eval(args: argparse.Namespace) -> int:
    from flowdsl.outputs import atomic_write_text, check_output_path

    if args.json:
        check_output_path(args.json, what="JSON result")
    res = evaluate_run(
        args.run,
        data=args.data,
        split=args.split,
        batch=args.batch,
        eval_max=args.eval_max,
        device=args.device,
        seed=args.seed,
        quiet=args.quiet,
    )
    examples = plural(res["n"], "example")
    where = f"{examples} of {res['data']} ({res['split']} split); {res['checkpoint']}, step {res['step']}"
    cond = "conditional " if res.get("context") else ""
    given = f" (given each example's {res['context']})" if res.get("context") else ""
    if res["bits_per_dim"] is not None:
        print(f"{res['spec']}: {res['bits_per_dim']:.4f} {cond}bits/dim on {where}{given}")
    else:
        print(
            f"{res['spec']}: {cond}NLL {res['nll_nats']:.4f} nats ({res['nll_nats_per_dim']:.4f} nats/dim) on "
            f"{where}{given}"
        )
    if res["nonfinite"]:
        print(f"warning: {plural(res['nonfinite'], 'example')} with a non-finite log-density", file=sys.stderr)
    if args.json:
        atomic_write_text(args.json, json.dumps(res, indent=2) + "\n", what="JSON result")
        print(f"wrote {args.json}")
    return 0


def register(subparsers) -> None:
    """Add ``flowdsl eval`` to an ``argparse`` subparsers object."""
    from flowdsl.cliargs import positive_int, seed
    from flowdsl.compiler.limits import LIMITS
    from flowdsl.runtime.training.device import add_device_argument

    p = subparsers.add_parser(
        "eval",
        help="score a trained run on other data (bits/dim or NLL)",
        description="Score a trained run on a data set: bits/dim for images, NLL in nats for vectors.",
    )
    p.add_argument("run", metavar="RUN|CKPT", help="run folder (uses best.pt) or checkpoint file (.pt, .safetensors)")
    p.add_argument(
        "--data", default=None, metavar="NAME|PATH", help="data set name or path (default: the run's training data)"
    )
    p.add_argument("--split", choices=("test", "train"), default="test", help="which split to score (default test)")
    p.add_argument(
        "--batch",
        type=positive_int(LIMITS.max_batch),
        default=256,
        metavar="N",
        help=f"examples per batch, 1 to {LIMITS.max_batch:,} (default 256)",
    )
    p.add_argument(
        "--eval-max",
        dest="eval_max",
        type=positive_int(),
        default=None,
        metavar="N",
        help="score at most the first N examples (default: all)",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the dequantisation noise (default 0)")
    add_device_argument(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON")
    p.set_defaults(func=cmd_eval)
