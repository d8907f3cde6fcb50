"""Multi-process training on ``torch.distributed`` (gloo on CPU, nccl with CUDA).

``torchrun --nproc_per_node=N -m flowdsl train SPEC ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables set; :func:`init_from_env` joins the
group. Without those variables everything runs in one process and the helpers are no-ops.

How the work is split (so N processes compute what one process computes with the same
global batch): every process draws the same global batch indices and the same dequantisation
noise, then keeps its contiguous shard of ``batch / N`` examples; DDP averages the gradients,
which equals the gradient of the global batch mean. Evaluation sums log-likelihoods over
strided shards with an all-reduce; sampling draws ``n / N`` per process and gathers them.
Only rank 0 writes checkpoints, metrics, plots and samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_from_env", "shutdown", "barrier", "all_reduce_sum", "all_gather_cat", "shard_range"]


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # the process group was created here (and is destroyed by shutdown)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_from_env() -> DistInfo:
    """Join the process group described by torchrun's environment (or stay single-process)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), owned=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistInfo()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), owned=True)


def shutdown(info: DistInfo) -> None:
    if info.owned and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_cat(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate equally shaped tensors from every rank along dim 0, in rank order."""
    if not info.active:
        return t
    parts = [torch.empty_like(t) for _ in range(info.world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, 0)


def shard_range(n: int, info: DistInfo) -> slice:
    """This rank's contiguous share of ``n`` items (n must be divisible by the world size)."""
    per = n // info.world
    return slice(info.rank * per, (info.rank + 1) * per)
