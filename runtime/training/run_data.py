"""The data of a training run: train / validation / test splits and their fixed dequantised copies.

The train split of the spec's data set loses a fixed share (``val_fraction``, 10 %, at most
``val_max`` examples; a PCG64(0) permutation, independent of the seed) to validation.
Validation and test data are dequantised once with fixed noise, so every evaluation scores the
same numbers; evaluations during the run score the first ``eval_max`` validation and test
examples each (0: all; ``--eval-max``), the final report all test examples.
Training batches are dequantised per step with a generator the loop seeds by (seed, step).
For a spec that declares a ``context`` every split carries the examples' contexts row for row
(``train.context``, ``val_c``, ``test_c``; :mod:`flowdsl.runtime.data.context`); contexts are
never dequantised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from flowdsl.runtime.data import Dataset, dequantize, load_for_spec
from flowdsl.runtime.training.config import TrainConfig
from flowdsl.runtime.training.schedule import _gen

__all__ = ["RunData", "load_run_data", "split_validation"]


@dataclass
class RunData:
    train: Dataset
    val: Optional[Dataset]
    test: Dataset
    levels: Optional[int]  # None: real-valued data
    dims: int  # dimensions per example
    mode: str  # dequantisation: the spec's (uniform, ...) or "none" for real data
    val_x: Optional[Tensor]  # dequantised validation data (None without a validation split)
    val_eval_x: Optional[Tensor]  # the part of val_x scored at evaluations (first eval_max examples)
    test_x: Tensor  # dequantised test data
    test_eval_x: Tensor  # the part of test_x scored at evaluations during the run
    notes: list[str]  # how the data was prepared
    # conditional specs: the contexts of the examples above, row for row (None: unconditional)
    val_c: Optional[Tensor] = None
    val_eval_c: Optional[Tensor] = None
    test_c: Optional[Tensor] = None
    test_eval_c: Optional[Tensor] = None

    @property
    def conditional(self) -> bool:
        return self.train.context is not None

    def train_batch(self, index: Any, generator: torch.Generator) -> Tensor:
        """Training examples ``index``, dequantised with ``generator``'s noise."""
        return dequantize(self.train.x[index], self.levels, self.mode, generator)

    def train_context(self, index: Any) -> Optional[Tensor]:
        """The contexts of training examples ``index`` (None for unconditional specs)."""
        return None if self.train.context is None else self.train.context[index]

    def describe(self, data: str) -> list[str]:
        """The lines ``flowdsl train`` prints about the data."""
        head = (
            f"data {data}: {len(self.train)} train, {len(self.val) if self.val is not None else 0} validation, "
            f"{len(self.test)} test; "
            f"shape {tuple(self.train.shape)}, {'levels ' + str(self.levels) if self.levels else 'real'}; "
            f"dequantize {self.mode}"
        )
        return [head] + [f"  {note}" for note in self.notes]


def split_validation(ds: Dataset, cfg: TrainConfig) -> tuple[Dataset, Optional[Dataset]]:
    """(train, validation) of ``ds``; no validation split when it would be empty or everything."""
    n_val = min(cfg.val_max, int(round(cfg.val_fraction * len(ds))))
    if n_val <= 0 or n_val >= len(ds):
        return ds, None
    perm = np.random.Generator(np.random.PCG64(0)).permutation(len(ds))
    val_idx = np.sort(perm[-n_val:])
    tr_idx = np.sort(perm[:-n_val])
    return ds.subset(tr_idx, "train"), ds.subset(val_idx, "val")


def load_run_data(spec: Any, cfg: TrainConfig) -> RunData:
    """Load ``cfg.data`` for ``spec`` (raises :class:`flowdsl.errors.DataError` when it does not fit)."""
    full = load_for_spec(spec, cfg.data, "train", seed=cfg.seed)
    test = load_for_spec(spec, cfg.data, "test", seed=cfg.seed)
    train_ds, val_ds = split_validation(full, cfg)
    levels = train_ds.levels
    dims = train_ds.dims
    mode = getattr(spec, "dequantize", "uniform") if levels is not None else "none"
    val_x = dequantize(val_ds.x, levels, mode, _gen("eval-noise", "val")) if val_ds is not None else None
    n_test_eval = min(len(test), cfg.eval_max) if cfg.eval_max else len(test)
    val_eval_x = val_x[: cfg.eval_max] if val_x is not None and cfg.eval_max else val_x
    test_x = dequantize(test.x, levels, mode, _gen("eval-noise", "test"))
    val_c = val_ds.context if val_ds is not None else None
    test_c = test.context
    notes = list(full.notes)
    if cfg.batch > len(train_ds):  # announced: the batch stream then repeats examples within a batch
        notes.append(
            f"batch {cfg.batch} is larger than the {len(train_ds)} training examples: every batch holds "
            f"examples more than once (about {cfg.batch / len(train_ds):.1f} passes over the data per step)"
        )
    return RunData(
        train=train_ds,
        val=val_ds,
        test=test,
        levels=levels,
        dims=dims,
        mode=mode,
        val_x=val_x,
        val_eval_x=val_eval_x,
        test_x=test_x,
        test_eval_x=test_x[:n_test_eval],
        notes=notes,
        val_c=val_c,
        val_eval_c=val_c[: cfg.eval_max] if val_c is not None and cfg.eval_max else val_c,
        test_c=test_c,
        test_eval_c=test_c[:n_test_eval] if test_c is not None else None,
    )
