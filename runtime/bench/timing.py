"""Measurement primitives of ``flowdsl bench``: alternating rounds, quartiles, per-round ratios,
the matrix-multiply peak, FLOP counting, and ``SpecResult`` (what one spec's probe measured).

Every round of :func:`alternate` runs each variant once in a shuffled (seeded) order, so all
variants see the same machine load; spreads are interquartile ranges over rounds, and a speed-up
is the median of the per-round ratios, never a ratio of medians.
"""

from __future__ import annotations

import statistics as st
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["prepared_model", "alternate", "matmul_peak", "count_flops", "SpecResult"]


def alternate(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Wall times (s) of each fn over ``repeats`` rounds; every round runs all fns once, in an
    order shuffled per round (seeded), so no variant always follows the same neighbour (whose
    after-effects, e.g. a thread pool still spinning, would otherwise always land on it)."""
    import random

    names = list(fns)
    rng = random.Random(0)
    with torch.no_grad():
        for _ in range(warmup):
            for n in names:
                fns[n]()
        out: dict[str, list[float]] = {n: [] for n in names}
        for r in range(repeats):
            order = rng.sample(names, len(names))
            for n in order:
                t = time.perf_counter()
                fns[n]()
                out[n].append(time.perf_counter() - t)
    return out


def _q(v: list[float]) -> tuple[float, float, float]:
    if len(v) < 2:
        return v[0], v[0], v[0]
    q = st.quantiles(v, n=4)
    return q[0], st.median(v), q[2]


def _ms(v: list[float]) -> str:
    lo, med, hi = _q(v)
    return f"{med * 1e3:.1f} [{lo * 1e3:.1f}–{hi * 1e3:.1f}]"


def _ratio(slow: list[float], fast: list[float]) -> tuple[float, float, float]:
    return _q([a / b for a, b in zip(slow, fast)])


def matmul_peak(threads: int, n: int = 1024, repeats: int = 12, device: str = "cpu") -> tuple[float, float]:
    """(best, median) float32 GFLOP/s of an n×n matrix product on this many threads (on ``device``;
    CUDA: each product waited for)."""
    dev = torch.device(device)
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    if dev.type == "cuda":
        times = alternate({"mm": lambda: (a @ b, torch.cuda.synchronize(dev))}, repeats)["mm"]
    else:
        times = alternate({"mm": lambda: a @ b}, repeats)["mm"]
    flops = 2 * n**3
    return flops / min(times) / 1e9, flops / st.median(times) / 1e9


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


@dataclass
class SpecResult:
    name: str
    times: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # direction -> variant -> s
    errors: dict[str, float] = field(default_factory=dict)
    compile_s: dict[str, float] = field(default_factory=dict)
    flops: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warm: dict[str, dict[str, list[float]]] | None = None  # the same after one training step
    kernels: dict | None = None  # bench_acceptance.conv_kernels, in the steady state
    threads: int = 0


def prepared_model(path: str, batch: int):
    """A spec file compiled, initialised on a uniform batch and randomised (seed 0): (spec, model, x)."""
    import flowdsl
    from flowdsl.runtime.training.demo import random_context, randomize_parameters

    spec = flowdsl.load(path)
    model = flowdsl.compile(spec)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *model.input_shape, generator=gen)
    model.train()
    with torch.no_grad():
        model(x, context=random_context(model, batch, x.dtype))  # data-dependent initialisation
    randomize_parameters(model, scale=0.1, seed=0)
    return spec, model.eval(), x
