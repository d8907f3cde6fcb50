"""The ``--peers-*`` flags of ``flowdsl bench`` and the section they drive
(:func:`flowdsl.runtime.bench.peers_report.peers_section`).

    flowdsl bench --sections peers [--peers-steps 1000] [--peers-seeds 0-29] [--peers-same-start] ...
"""

from __future__ import annotations

import argparse
from typing import Callable

from flowdsl.cliargs import batch_size, int_list, int_range, name_list, nonnegative_int, steps

__all__ = ["add_peers_arguments", "peers_part", "seed_list", "PEER_FAMILIES"]

#: the model families of ``--peers-models``, in the tables' order (``peers.FAMILIES``)
PEER_FAMILIES = ("nsf", "affine", "maf", "maf_spline")


def seed_list(text: str) -> list[int]:
    """An argparse type: a non-empty comma list of seeds (whole numbers ≥ 0) and ranges ``a-b``
    (both ends included), e.g. ``0,1,2`` or ``0-29``; repeats are dropped."""
    seed = nonnegative_int()
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        lo, dash, hi = part.partition("-")
        if dash:
            if not (lo.strip() and hi.strip()):
                raise argparse.ArgumentTypeError(f"{part!r}: expected a seed or a range a-b")
            a, b = seed(lo), seed(hi)
            if b < a:
                raise argparse.ArgumentTypeError(f"seed range {part!r} runs backwards")
            out += range(a, b + 1)
        elif part:
            out += int_list(seed)(part)
    if not out:
        raise argparse.ArgumentTypeError("give at least one seed")
    return list(dict.fromkeys(out))


def add_peers_arguments(b: argparse.ArgumentParser) -> None:
    """The ``--peers-*`` flags on the ``bench`` parser."""
    from flowdsl.runtime.bench.peers_runs import TABULAR_SETS, TOY_SETS

    PEER_DATA = TABULAR_SETS + TOY_SETS
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
        type=seed_list,
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


def peers_part(args: argparse.Namespace, say: Callable[[str], None]) -> str:
    """``## Peers: zuko and nflows`` from the parsed flags (``flowdsl.runtime.bench.peers_report``)."""
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
