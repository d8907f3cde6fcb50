"""Pure functions of (seed, step): the learning-rate schedule and the batch stream.

Batches and noise depend only on the seed and the step, so a resumed run sees exactly the
batches it would have seen and N processes can each take their shard.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
from torch import Tensor

from flowdsl.runtime.training.config import TrainConfig

__all__ = ["lr_at", "effective_warmup", "BatchStream"]


def _mix(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts`` (stable across processes and runs)."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _gen(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(_mix(*parts))


def effective_warmup(cfg: TrainConfig) -> int:
    """Warm-up steps: ``warmup``, capped at a fifth of the run so short runs reach the peak."""
    return min(cfg.warmup, cfg.steps // 5)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of update ``step`` (0-based): linear warm-up, then cosine or constant."""
    warmup = effective_warmup(cfg)
    warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    if cfg.schedule == "constant":
        return cfg.lr * warm
    span = max(1, cfg.steps - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    f = cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * warm * f


class BatchStream:
    """Global batch indices of step t: positions [t·B, (t+1)·B) of seeded epoch permutations."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        self.n, self.batch, self.seed = int(n), int(batch), int(seed)
        self._cache: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = torch.randperm(self.n, generator=_gen("epoch", self.seed, epoch))
        return self._cache[epoch]

    def indices(self, step: int) -> Tensor:
        start = step * self.batch
        out = []
        while len(out) < self.batch:
            e, off = divmod(start + len(out), self.n)
            take = min(self.batch - len(out), self.n - off)
            out.extend(self._perm(e)[off : off + take].tolist())
        return torch.tensor(out, dtype=torch.long)

    def epoch(self, step: int) -> float:
        return step * self.batch / self.n
