"""Quality and speed runs of the peers benchmark (models from :mod:`flowdsl.runtime.bench.peers`).

Quality (:func:`train_and_test`): every model is trained by the same loop: Adam (lr, no weight
decay), cosine decay of the rate to 0 over ``steps``, gradient norm clipped at 5, mini-batches drawn
with replacement from one seeded generator (the same index sequence for every model of a data
set), parameters initialised from the same seed. The validation loss (10 % of the train split, a
fixed permutation) is measured every ``eval_every`` steps and at the end; the test NLL (nats per
dimension, −mean log p(x) / D, in the data's standardised coordinates) is that of the weights with
the best validation loss. A run whose loss turns non-finite stops and is reported as diverged.

Data (``runtime/data``): wine (13-D), breast_cancer (30-D), digits64 (64-D, dequantised) with
their fixed standardised splits; the toys 8gaussians, checkerboard, pinwheel (2-D; ``toy_n``
train points drawn with seed 0, the 5,000 test points of their test split), whose exact test NLL
(``log_density``) is reported next to the models as the floor.

Speed (:func:`time_family`): log_prob and sampling at one batch size, every variant once per
round in shuffled order (``timing.alternate``): flowdsl unfused eager, ``model.fuse()`` eager,
fused + ``torch.compile(fullgraph=True, options={"freezing": True})`` (as the README documents),
zuko's and nflows' own calls (``flow().log_prob(x)``, ``flow().sample((n,))``; ``flow.log_prob``,
``flow.sample``). Sampling includes drawing the base noise everywhere (flowdsl: ``prior.sample``
then the inverse). MAF sampling is D sequential passes in all three. flowdsl's compiled sampling
is left out for the MAF families (``SEQUENTIAL_SAMPLING``): its D unrolled steps per layer make the
inductor compile grow with D (40 s for the log-density at D = 64, but 280 s for sampling at D = 13
and over 2,000 s at D = 64 on a loaded machine), so the README documents the fused module, eager,
for a sequential direction, and that is the variant the MAF sampling verdict reads.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from flowdsl.runtime.bench.peers import Arch, Peer, build_peer, param_counts
from flowdsl.runtime.bench.peers_start import build_run_peer

__all__ = ["TABULAR_SETS", "TOY_SETS", "load_split", "true_test_nll", "RunResult", "train_and_test", "time_family"]

#: families whose sampling is D sequential passes: timed fused (eager), not compiled (see above)
SEQUENTIAL_SAMPLING = ("maf", "maf_spline")
TABULAR_SETS = ("wine", "breast_cancer", "digits64")
TOY_SETS = ("8gaussians", "checkerboard", "pinwheel")
CLIP = 5.0
VAL_FRACTION = 0.1


def load_split(name: str, toy_n: int = 20_000) -> tuple[Tensor, Tensor, Tensor]:
    """(train, validation, test) float32 tensors (N, D) of a tabular set or a toy."""
    from flowdsl.runtime.data.base import fixed_split

    if name in TOY_SETS:
        from flowdsl.runtime.data.toy2d import load_toy

        full = load_toy(name, (2,), None, "train", seed=0, n=toy_n).x
        test = load_toy(name, (2,), None, "test", seed=0).x
    else:
        from flowdsl.runtime.data.tabular import TABULAR, load_tabular

        shape = (TABULAR[name][1],)
        full = load_tabular(name, shape, None, "train", seed=0).x
        test = load_tabular(name, shape, None, "test", seed=0).x
    tr, va = fixed_split(len(full), test_fraction=VAL_FRACTION, seed=1)
    return full[tr].float(), full[va].float(), test.float()


def true_test_nll(name: str, test: Tensor) -> float | None:
    """The exact density's test NLL (nats/dim) for a toy, None for the tabular sets."""
    if name not in TOY_SETS:
        return None
    from flowdsl.runtime.data.toy2d import log_density

    return float(-np.mean(log_density(name, test.double().numpy())) / test.shape[1])


@dataclass
class RunResult:
    library: str
    family: str
    data: str
    params: tuple[int, int]
    test_nll: float  # nats/dim, weights of the best validation loss; nan when diverged
    val_nll: float
    best_step: int
    seconds: float  # wall time of the training loop
    cpu_seconds: float = 0.0  # CPU time of this process in it (runs of one thread: the quiet-machine cost)
    notes: list[str] = field(default_factory=list)
    seed: int = 0  # parameters and batch order


@torch.no_grad()
def _nll(peer: Peer, x: Tensor, chunk: int = 2048) -> float:
    """−mean log p(x) / D (nats/dim), float64 accumulation."""
    total = 0.0
    for i in range(0, len(x), chunk):
        total += float(-peer.log_prob(x[i : i + chunk]).double().sum())
    return total / (len(x) * x.shape[1])


def train_and_test(
    library: str,
    family: str,
    data: str,
    split: tuple[Tensor, Tensor, Tensor],
    arch: Arch,
    steps: int,
    batch: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    eval_every: int = 100,
) -> RunResult:
    """Train one model with the shared loop (see the module docstring); its test NLL."""
    train, val, test = split
    dim = train.shape[1]
    peer = build_run_peer(library, family, dim, arch, seed)
    module = peer.module
    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen = torch.Generator().manual_seed(seed)
    best = (math.inf, 0, copy.deepcopy(module.state_dict()))
    notes: list[str] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(train), (batch,), generator=gen)
        loss = -peer.log_prob(train[idx]).mean()
        if not torch.isfinite(loss):
            notes.append(f"diverged at step {step} (non-finite loss)")
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), CLIP)
        opt.step()
        sched.step()
        if step % eval_every == 0 or step == steps:
            module.eval()
            v = _nll(peer, val)
            module.train()
            if math.isfinite(v) and v < best[0]:
                best = (v, step, copy.deepcopy(module.state_dict()))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    module.load_state_dict(best[2])
    module.eval()
    test_nll = _nll(peer, test) if best[1] > 0 else math.nan
    return RunResult(
        library, family, data, param_counts(module), test_nll, best[0], best[1], seconds, cpu, notes, seed
    )


# ----------------------------------------------------------------------------- speed
@dataclass
class SpeedResult:
    family: str
    dim: int
    batch: int
    params: dict[str, tuple[int, int]]
    times: dict[str, dict[str, list[float]]]  # direction -> variant -> seconds per round
    compile_s: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)  # variant -> max |Δ log_prob| / max |log_prob|
    notes: list[str] = field(default_factory=list)


def _randomize_flowdsl(model, seed: int) -> None:
    """Move a fresh flowdsl model off its identity start (zero-initialised last layers), so the
    timed splines use all their bins: parameters += 0.1·N(0, 1), seeded."""
    from flowdsl.runtime.training.demo import randomize_parameters

    randomize_parameters(model, scale=0.1, seed=seed)


def time_family(
    family: str,
    dim: int,
    arch: Arch,
    batch: int,
    repeats: int,
    libraries: list[str],
    compile_: bool = True,
    say: Callable[[str], None] = print,
) -> SpeedResult:
    """Time log_prob and sampling of ``family`` at ``dim`` in every library (see the module docstring)."""
    from flowdsl.runtime.bench.timing import alternate

    peers = {lib: build_peer(lib, family, dim, arch, seed=0) for lib in libraries}
    for p in peers.values():
        p.module.eval()
    model = peers["flowdsl"].module
    _randomize_flowdsl(model, seed=0)
    fused = model.fuse()
    prior = fused.prior
    x = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0))
    res = SpeedResult(family, dim, batch, {k: param_counts(p.module) for k, p in peers.items()}, {})
    lp: dict[str, Callable] = {"flowdsl unfused": lambda: model.log_prob(x), "flowdsl fused": lambda: fused.log_prob(x)}
    sa: dict[str, Callable] = {
        "flowdsl unfused": lambda: model.inverse(prior.sample(batch)),
        "flowdsl fused": lambda: fused.inverse(prior.sample(batch)),
    }
    with torch.no_grad():
        ref = model.log_prob(x)
        scale = float(ref.abs().max().clamp_min(1.0))
        res.errors["flowdsl fused"] = float((fused.log_prob(x) - ref).abs().max()) / scale
        if compile_:
            torch._dynamo.reset()
            opts = {"freezing": True}
            c_lp = torch.compile(fused.log_prob, fullgraph=True, dynamic=False, options=opts)
            #: direction -> (compiled function, its warm-up input, its timed call, the table it joins)
            compiled = {"log_prob": (c_lp, x, lambda: c_lp(x), lp)}
            if family in SEQUENTIAL_SAMPLING:
                res.notes.append("sampling (D sequential steps) timed fused, not compiled (see peers_runs)")
            else:
                c_inv = torch.compile(fused.inverse, fullgraph=True, dynamic=False, options=opts)
                compiled["sample"] = (c_inv, prior.sample(batch), lambda: c_inv(prior.sample(batch)), sa)
            for key, (fn, arg, timed, table) in compiled.items():
                t = time.perf_counter()
                fn(arg)
                res.compile_s[key] = time.perf_counter() - t
                say(f"  peers {family} D={dim}: flowdsl compiled {key} in {res.compile_s[key]:.1f} s")
                table["flowdsl fused + compile"] = timed
            res.errors["flowdsl fused + compile"] = float((c_lp(x) - ref).abs().max()) / scale
    for lib in libraries:
        if lib == "flowdsl":
            continue
        p = peers[lib]
        lp[lib] = lambda p=p: p.log_prob(x)
        sa[lib] = lambda p=p: p.sample(batch)
    say(f"  peers {family} D={dim}: timing {', '.join(lp)} ({repeats} alternating rounds, both directions)")
    fns = {**{f"log_prob|{k}": v for k, v in lp.items()}, **{f"sample|{k}": v for k, v in sa.items()}}
    times = alternate(fns, repeats)
    for d in ("log_prob", "sample"):
        res.times[d] = {k.split("|", 1)[1]: v for k, v in times.items() if k.startswith(d + "|")}
    return res
