"""scikit-learn's 8×8 digits (bundled with scikit-learn: no network), with a fixed split.

1,797 grey images of shape 1×8×8 with integer values 0…16, hence ``levels=17``.

The split is fixed and does not depend on the run's seed, so test bits/dim are comparable
between runs: the images are permuted with ``numpy.random.Generator(PCG64(0))``, the first
1,500 of the permutation are the **train** split and the remaining 297 the **test** split (both
kept in their original order).
"""

from __future__ import annotations

import functools

import numpy as np

from flowdsl.runtime.data.base import Dataset, as_dataset, fixed_split
from flowdsl.runtime.data.registry import DataRequest, register_dataset

__all__ = ["DIGITS_LEVELS", "DIGITS_SHAPE", "DIGITS_N_TRAIN", "digits_arrays", "load_digits"]

DIGITS_LEVELS = 17
DIGITS_SHAPE = (1, 8, 8)
DIGITS_N_TRAIN = 1500
DIGITS_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as _sk_load

    d = _sk_load()
    images = np.asarray(d.images, dtype=np.int64).reshape(-1, *DIGITS_SHAPE)
    return images, np.asarray(d.target, dtype=np.int64)


def digits_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 8, 8) int64 in 0..16 and labels (N,) of one split."""
    images, labels = _all_digits()
    train_idx, test_idx = fixed_split(len(images), n_train=DIGITS_N_TRAIN, seed=DIGITS_SPLIT_SEED)
    idx = train_idx if split == "train" else test_idx
    return images[idx], labels[idx]


def load_digits(input_shape, levels, split: str = "train") -> Dataset:
    images, labels = digits_arrays(split)
    return as_dataset(
        "digits",
        images,
        input_shape=input_shape,
        levels=levels,
        data_levels=DIGITS_LEVELS,
        labels=labels,
        split=split,
        notes=[
            f"scikit-learn digits, {split} split ({len(images)} of 1797; fixed PCG64(0) permutation, first 1500 train)"
        ],
    )


@register_dataset(
    "digits",
    kind="image",
    description="scikit-learn's 8×8 digits, 1×8×8, 17 levels (fixed split: 1,500 train, 297 test)",
)
def _digits(req: DataRequest) -> Dataset:
    return load_digits(req.shape, req.levels, req.split)
