"""Multi-process training on ``torch.distributed`` (gloo on the CPU, nccl when the model is on CUDA).

``torchrun --nproc-per-node=N -m flowdsl train SPEC ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables set; :func:`init_from_env` joins the
group. Without those variables everything runs in one process and the helpers are no-ops.

The backend follows the device the process actually computes on (:func:`backend_for`): nccl only
for a CUDA device, gloo otherwise, so a CPU run on a machine with GPUs still works. With CUDA each
process first selects its own GPU (``torch.cuda.set_device``; ``--device auto|cuda`` resolves to
``cuda:$LOCAL_RANK``, see :mod:`.device`), and :func:`check_process_device` refuses a ``cuda:N``
that is not the process's own. Collectives run on tensors of that device (``DistInfo.device``).

How the work is split (so N processes compute what one process computes with the same
global batch): every process draws the same global batch indices and the same dequantisation
noise, then keeps its contiguous shard of ``batch / N`` examples; DDP averages the gradients,
which equals the gradient of the global batch mean. Evaluation sums log-likelihoods over
strided shards with an all-reduce; sampling draws ``n / N`` per process and gathers them.
Only rank 0 writes checkpoints, metrics, plots and samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from flowdsl.errors import FlowDSLError

__all__ = [
    "DistInfo",
    "backend_for",
    "check_process_device",
    "init_from_env",
    "shutdown",
    "barrier",
    "all_reduce_sum",
    "all_gather_cat",
    "shard_range",
]


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # the process group was created here (and is destroyed by shutdown)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives run

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def backend_for(device: torch.device | str) -> str:
    """The process-group backend for a process computing on ``device``: nccl for CUDA, else gloo
    (nccl cannot reduce CPU tensors; whether CUDA merely exists on the machine does not matter)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def check_process_device(device: torch.device, local_rank: int, world: int) -> torch.device:
    """``device``, unless several processes would share a GPU: with ``world`` > 1 a CUDA device must
    be ``cuda:$LOCAL_RANK`` (a user error otherwise)."""
    if world > 1 and device.type == "cuda" and device.index not in (None, local_rank):
        raise FlowDSLError(
            f"--device {device}: under torchrun each process uses its own GPU, cuda:$LOCAL_RANK "
            f"(cuda:{local_rank} here); use --device cuda or auto",
            filename="train",
        )
    return torch.device("cuda", local_rank) if world > 1 and device.type == "cuda" else device


def init_from_env(device: torch.device | str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment (or stay single-process).

    ``device`` (default the CPU) is where this process computes: a CUDA device is made current
    (``torch.cuda.set_device``) before the group is joined, with the nccl backend; gloo otherwise.
    """
    dev = torch.device("cpu") if device is None else torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owned=False, device=dev)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistInfo(device=dev)
    dev = check_process_device(dev, local_rank, world)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend_for(dev))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owned=True, device=dev)


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
