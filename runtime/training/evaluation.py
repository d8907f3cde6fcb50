"""Scoring a model during and after training: bits/dim of held-out data, latent sparsity.

:func:`evaluate_bpd` scores already dequantised data in eval mode without gradients (under
torchrun each process takes a strided shard and the sums are all-reduced) and converts the
mean negative log-likelihood to bits/dim of the discrete data (for a conditional spec the
conditional bits/dim, −log p(x | c), with each example's context); :func:`score_bpd` does the same
within a wall-clock deadline (``--max-time``), reporting progress and how many examples it
scored. :func:`latent_sparsity` is the spike_slab prior's report on the latents of some
examples (None for other priors).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from flowdsl.runtime.data import nats_to_bits_per_dim
from flowdsl.runtime.training.distributed import DistInfo, all_reduce_sum

__all__ = ["evaluate_bpd", "score_bpd", "log_prob", "latent_sparsity", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter or buffer (the CPU for a model without tensors)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def score_bpd(
    model: nn.Module,
    x01: Tensor,
    dims: int,
    levels: Optional[int],
    batch: int,
    info: DistInfo = DistInfo(),
    *,
    deadline: Optional[float] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    context: Optional[Tensor] = None,
) -> tuple[float, int]:
    """``(mean bits/dim, examples scored)`` of already dequantised data ``x01``; with ``context``
    (the contexts of ``x01``, row for row) the conditional bits/dim, from log p(x | c).

    The mean is over the first examples scored in batches of ``batch`` (strided shards under
    torchrun): all of them, unless the wall-clock ``deadline`` (``time.time()`` value) passes
    first, after which no further batch is started (every process stops at the same batch).
    ``progress(done, total)`` is called after every batch (examples of this process).
    ``x01`` may live on the CPU: each batch is moved to the model's device; the sums stay on that
    device (one host read at the end).
    """
    was = model.training
    model.eval()
    dev = model_device(model)
    xs = x01[info.rank :: info.world] if info.active else x01
    cs = None if context is None else (context[info.rank :: info.world] if info.active else context)
    total = torch.zeros(2, dtype=torch.float64, device=dev)
    try:
        for i in range(0, len(xs), batch):
            if deadline is not None and i > 0:
                late = torch.tensor([float(time.time() > deadline)], dtype=torch.float64, device=dev)
                if all_reduce_sum(late, info)[0] > 0:
                    break
            cb = None if cs is None else cs[i : i + batch].to(dev, non_blocking=True)
            lp = log_prob(model, xs[i : i + batch].to(dev, non_blocking=True), cb).to(torch.float64)
            total[0] += lp.sum()
            total[1] += lp.numel()
            if progress is not None:
                progress(min(i + batch, len(xs)), len(xs))
        all_reduce_sum(total, info)
    finally:
        model.train(was)
    n = int(total[1])
    if n == 0:
        return float("nan"), 0
    nll = float(-total[0] / total[1]) / dims
    return float(nats_to_bits_per_dim(nll, levels)), n


def log_prob(model: nn.Module, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
    """``model.log_prob(x)``, or ``model.log_prob(x, context=context)`` for a context (the
    unconditional call is the one it always was)."""
    return model.log_prob(x) if context is None else model.log_prob(x, context=context)


def evaluate_bpd(
    model: nn.Module,
    x01: Tensor,
    dims: int,
    levels: Optional[int],
    batch: int,
    info: DistInfo = DistInfo(),
    context: Optional[Tensor] = None,
) -> float:
    """Mean bits/dim of already dequantised data ``x01`` (all of it; strided shards under torchrun);
    conditional bits/dim with ``context``."""
    return score_bpd(model, x01, dims, levels, batch, info, context=context)[0]


def latent_sparsity(model: nn.Module, x: Tensor, context: Optional[Tensor] = None) -> Optional[dict[str, Any]]:
    """The prior's ``sparsity_report`` of the latents of ``x`` (None when the prior has none);
    the model is left in training mode."""
    prior = getattr(model, "prior", None)
    if prior is None or not hasattr(prior, "sparsity_report"):
        return None
    with torch.no_grad():
        model.eval()
        dev = model_device(model)
        z, _ = model(x.to(dev)) if context is None else model(x.to(dev), context=context.to(dev))
        model.train()
    return prior.sparsity_report(z)
