"""Tabular vector data bundled with scikit-learn (no network): wine, breast cancer, digits as vectors.

Each set is a real-vector source (``input vector(dim=D)``), standardised with the **train** split's
statistics and split by a fixed ``numpy.random.Generator(PCG64(0))`` permutation that does not
depend on the run's seed (train = the first ``n_train`` of the permutation, test = the rest, both
kept in their original order):

=============  ====  =====  =====  =====================================================
name           D     train  test   what
=============  ====  =====  =====  =====================================================
wine           13    142    36     UCI wine recognition (178 examples, 3 cultivars)
breast_cancer  30    455    114    UCI breast cancer Wisconsin, diagnostic (569 examples)
digits64       64    1500   297    the 8×8 digits flattened, dequantised (same split as ``digits``)
=============  ====  =====  =====  =====================================================

Standardisation: x_std = (x − μ) / σ with μ, σ (per dimension, float64, ``ddof=0``) of the train
split, stored on the returned :class:`~flowdsl.runtime.data.base.Dataset` as
``dataset.standardization`` (a :class:`Standardization`): ``inverse`` undoes it and
``log_det`` = −Σ log σ is log |∂x_std/∂x|, so log p(x) = log p(x_std) + log_det.

``digits64`` dequantises the raw values k ∈ {0 … 16}: x = k + u, u ~ U[0, 1)^64 drawn with
PCG64(seed) for the train split and PCG64(seed + 1,000,003) for the test split (a (split, seed)
pair always gives the same vectors, as the image pipeline's seeded noise). Its μ, σ are the exact
moments of that dequantised train distribution, μ = mean(k) + ½ and σ² = var(k) + 1/12 over the
train images, so they do not depend on the seed (pixels that are always 0 get σ = 1/√12).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from flowdsl.runtime.data.base import Dataset, as_dataset, fixed_split
from flowdsl.runtime.data.registry import DataRequest, register_dataset

__all__ = ["TABULAR", "Standardization", "tabular_raw", "load_tabular"]

SPLIT_SEED = 0
TEST_SEED_OFFSET = 1_000_003
DIGITS_LEVELS = 17

# name: (scikit-learn loader, dimension, train size)
TABULAR: dict[str, tuple[str, int, int]] = {
    "wine": ("load_wine", 13, 142),
    "breast_cancer": ("load_breast_cancer", 30, 455),
    "digits64": ("load_digits", 64, 1500),
}


@dataclass(frozen=True)
class Standardization:
    """x_std = (x − mean) / std per dimension (float64 arrays of shape (D,))."""

    mean: np.ndarray
    std: np.ndarray

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.std

    def inverse(self, x_std) -> np.ndarray:
        """Back to the original units: x = x_std · std + mean (a numpy array or a tensor, (..., D))."""
        return np.asarray(x_std, dtype=np.float64) * self.std + self.mean

    @property
    def log_det(self) -> float:
        """log |∂x_std/∂x| = −Σ log std: log p(x) = log p(x_std) + log_det."""
        return float(-np.log(self.std).sum())


@functools.lru_cache(maxsize=None)
def tabular_raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """All examples (N, D) float64 (digits64: raw integer levels) and labels (N,) of ``name``."""
    import sklearn.datasets as skd

    d = getattr(skd, TABULAR[name][0])()
    x = np.asarray(d.data, dtype=np.float64).reshape(len(d.target), -1)
    return x, np.asarray(d.target, dtype=np.int64)


@functools.lru_cache(maxsize=None)
def _split(name: str) -> tuple[np.ndarray, np.ndarray]:
    x, _ = tabular_raw(name)
    return fixed_split(len(x), n_train=TABULAR[name][2], seed=SPLIT_SEED)


def standardization(name: str) -> Standardization:
    """The train split's standardisation of ``name`` (see the module docstring)."""
    x, _ = tabular_raw(name)
    tr = x[_split(name)[0]]
    if name == "digits64":
        return Standardization(tr.mean(0) + 0.5, np.sqrt(tr.var(0) + 1.0 / 12.0))
    return Standardization(tr.mean(0), tr.std(0))


def load_tabular(name: str, input_shape, levels, split: str = "train", seed: int = 0) -> Dataset:
    """One split of the tabular set ``name``, standardised (see the module docstring)."""
    x, y = tabular_raw(name)
    idx = _split(name)[0 if split == "train" else 1]
    notes = [
        f"scikit-learn {name}, {split} split ({len(idx)} of {len(x)}; fixed PCG64(0) permutation), "
        "standardised with the train split's mean and std"
    ]
    x, y = x[idx], y[idx]
    if name == "digits64":
        s = seed if split == "train" else seed + TEST_SEED_OFFSET
        x = x + np.random.Generator(np.random.PCG64(s)).random(x.shape)
        notes.append(f"dequantised: k + U[0, 1) with seed {s}")
    st = standardization(name)
    ds = as_dataset(
        name, st.apply(x), input_shape=input_shape, levels=levels, data_levels=None, labels=y, split=split, notes=notes
    )
    ds.standardization = st
    return ds


def _load(req: DataRequest) -> Dataset:
    return load_tabular(req.name, req.shape, req.levels, req.split, req.seed)


@register_dataset(
    "wine", kind="vector", description="scikit-learn's wine, 13-D, standardised (fixed split: 142 train, 36 test)"
)
def _wine(req: DataRequest) -> Dataset:
    return _load(req)


@register_dataset(
    "breast_cancer",
    kind="vector",
    description="scikit-learn's breast cancer, 30-D, standardised (fixed split: 455 train, 114 test)",
)
def _breast_cancer(req: DataRequest) -> Dataset:
    return _load(req)


@register_dataset(
    "digits64",
    kind="vector",
    description="scikit-learn's 8×8 digits as 64-D vectors, dequantised (seeded), standardised "
    "(split of `digits`: 1,500 train, 297 test)",
)
def _digits64(req: DataRequest) -> Dataset:
    return _load(req)
