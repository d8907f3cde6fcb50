"""The :class:`Dataset` value every loader returns, and the checks shared by all loaders.

A dataset is held in memory as one float32 tensor ``x`` of shape (N, *shape):

* image data (``levels`` set) keeps the **raw discrete values** 0 … levels−1; dequantisation
  (:mod:`flowdsl.runtime.data.dequantize`) turns them into the [0, 1) scale the model sees;
* vector data (``levels`` is None) holds real values as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from flowdsl.errors import DataError

__all__ = ["Dataset", "format_shape", "check_shape", "check_values", "to_levels", "as_dataset", "fixed_split"]

Shape = tuple[int, ...]


@dataclass
class Dataset:
    """An in-memory data set.

    Attributes:
        name: what the user asked for (``"digits"``, a path, ...).
        x: float32 tensor (N, *shape): raw discrete values for images, real values for vectors.
        shape: the shape of one example (C, H, W) or (D,).
        levels: number of quantisation levels of discrete data; None for real vectors.
        labels: optional int64 tensor (N,): the class of each example when the source has classes.
        context: a per-example context: as a source gives it, the raw array it holds (numpy
            (N, ...): an ``.npz``'s ``context`` array) or a
            :class:`~flowdsl.runtime.data.context.ContextProblem` saying why it cannot have one;
            after :func:`~flowdsl.runtime.data.context.attach_context` (done by ``load_for_spec``
            for a spec that declares a context) the checked tensor the model takes: int64 (N,)
            labels, float32 (N, D) vectors or (N, C, H, W) images; None for unconditional specs.
        split: ``"train"`` or ``"test"``.
        notes: how the data was prepared (printed by ``flowdsl train``).
        standardization: for standardised sources (:mod:`.tabular`), the map that was applied
            (``standardization.inverse`` undoes it); None otherwise.
    """

    name: str
    x: torch.Tensor
    shape: Shape
    levels: Optional[int] = None
    labels: Optional[torch.Tensor] = None
    split: str = "train"
    notes: list[str] = field(default_factory=list)
    standardization: Optional[Any] = None
    context: Optional[Any] = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def discrete(self) -> bool:
        return self.levels is not None

    @property
    def dims(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    def subset(self, index: torch.Tensor | Sequence[int], split: str | None = None) -> "Dataset":
        """A new dataset holding the examples at ``index`` (in that order)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return Dataset(
            name=self.name,
            x=self.x[index],
            shape=self.shape,
            levels=self.levels,
            labels=None if self.labels is None else self.labels[index],
            split=split or self.split,
            notes=list(self.notes),
            standardization=self.standardization,
            context=_take(self.context, index),
        )


def _take(context: Any, index: torch.Tensor) -> Any:
    """The rows ``index`` of a context (a tensor or an array); other values (None, a problem) as they are."""
    if isinstance(context, torch.Tensor):
        return context[index]
    if isinstance(context, np.ndarray):
        return context[index.numpy()]
    return context


def format_shape(shape: Sequence[int], levels: int | None = None) -> str:
    """``1×8×8 (17 levels)`` / ``2 (real)`` — the way shapes appear in messages."""
    s = "×".join(str(int(d)) for d in shape) or "scalar"
    if levels is None:
        return f"{s} (real vectors)" if len(shape) == 1 else s
    return f"{s} ({levels} levels)"


def check_shape(name: str, data_shape: Shape, data_levels: int | None, input_shape: Shape, levels: int | None) -> None:
    """Raise :class:`DataError` naming both shapes when the data does not fit the spec's input."""
    if tuple(int(d) for d in data_shape) != tuple(int(d) for d in input_shape):
        raise DataError(
            f"data {name!r} has shape {format_shape(data_shape, data_levels)} "
            f"but the spec's input is {format_shape(input_shape, levels)}",
            filename=str(name),
        )


def check_values(name: str, array: np.ndarray, discrete: bool) -> None:
    """Refuse values a flow cannot be trained on, naming the file: complex numbers (a cast to
    float would drop the imaginary part), NaN or infinite values (also values beyond float32's
    range, which become infinite), and constant data (the first layer's data-dependent scale divides
    by the spread: real data with a constant dimension, or data of one value only, trains to
    losses like 1e19). One example alone is not called constant."""
    a = np.asarray(array)
    if np.iscomplexobj(a):
        raise DataError(
            f"data {name!r} holds complex numbers ({a.dtype}); flows model real values: give the real and "
            "imaginary parts as separate dimensions",
            filename=str(name),
        )
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise DataError(f"data {name!r} is not numeric (type {a.dtype})", filename=str(name))
    if a.size == 0:
        return
    if np.issubdtype(a.dtype, np.floating):
        finite = np.isfinite(a)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            raise DataError(
                f"data {name!r} holds NaN or infinite values (the first at example {int(bad[0])}, "
                f"index {tuple(int(i) for i in bad[1:])}: {a[tuple(bad)]!r})",
                filename=str(name),
            )
        big = float(np.abs(a).max())
        if big > float(np.finfo(np.float32).max):
            raise DataError(
                f"data {name!r} holds values up to {big:g}, beyond float32's range (they would become infinite)",
                filename=str(name),
            )
    if a.ndim < 2 or a.shape[0] < 2:
        return
    flat = a.reshape(a.shape[0], -1)
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    if (lo == hi).all():
        same = f"every value is {float(lo[0]):g}" if (lo == lo[0]).all() else "every example is the same"
        raise DataError(
            f"data {name!r} is constant: {same} (all {a.shape[0]:,} examples); a flow cannot learn a density from it",
            filename=str(name),
        )
    if not discrete:
        const = np.flatnonzero(lo == hi)
        if const.size:
            shown = ", ".join(str(int(i)) for i in const[:5]) + (", ..." if const.size > 5 else "")
            raise DataError(
                f"data {name!r} has {const.size} constant dimension{'s' * (const.size > 1)} (index {shown}, "
                f"value {float(lo[const[0]]):g}); real-valued data needs spread in every dimension "
                "(drop the dimension, or add noise)",
                filename=str(name),
            )


def to_levels(
    x: np.ndarray, data_levels: int, levels: int | None, name: str, notes: list[str]
) -> tuple[np.ndarray, int]:
    """Requantise discrete values from ``data_levels`` to the spec's ``levels``.

    Coarser levels are allowed when they divide the data's (``256 → 32`` keeps the top 5 bits,
    as Glow's ``n_bits``); anything else is a :class:`DataError`.
    """
    if levels is None or levels == data_levels:
        return x, data_levels
    if levels < data_levels and data_levels % levels == 0:
        f = data_levels // levels
        notes.append(f"requantised from {data_levels} to {levels} levels (value // {f})")
        return np.floor_divide(x, f), levels
    raise DataError(
        f"data {name!r} has {data_levels} quantisation levels but the spec's input says levels={levels} "
        f"(only coarser levels that divide {data_levels} can be derived)",
        filename=str(name),
    )


def as_dataset(
    name: str,
    array: np.ndarray,
    *,
    input_shape: Shape,
    levels: int | None,
    data_levels: int | None,
    labels: np.ndarray | None = None,
    split: str = "train",
    notes: list[str] | None = None,
    context: Any = None,
) -> Dataset:
    """Check ``array`` (N, *shape) against the spec and wrap it (requantising if asked)."""
    notes = list(notes or [])
    array = np.asarray(array)
    if array.ndim < 2:
        raise DataError(
            f"data {name!r} must hold at least a batch axis and one data axis, got shape {array.shape}",
            filename=str(name),
        )
    if array.shape[0] == 0:
        raise DataError(f"data {name!r} ({split} split) is empty", filename=str(name))
    check_shape(name, array.shape[1:], data_levels, input_shape, levels)
    check_values(name, array, discrete=data_levels is not None)
    if data_levels is not None:
        array, data_levels = to_levels(array, data_levels, levels, name, notes)
    elif levels is not None:
        raise DataError(
            f"data {name!r} holds real values but the spec's input is discrete ({format_shape(input_shape, levels)}); "
            "image specs need integer data in 0..levels-1",
            filename=str(name),
        )
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    y = None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return Dataset(
        name=name,
        x=x,
        shape=tuple(int(d) for d in array.shape[1:]),
        levels=data_levels,
        labels=y,
        split=split,
        notes=notes,
        context=context,
    )


def fixed_split(
    n: int, n_train: int | None = None, test_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a deterministic train/test split: a PCG64(``seed``) permutation, train first.

    ``n_train`` fixes the train size; otherwise the last ``ceil(test_fraction·n)`` go to test.
    """
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    if n_train is None:
        n_test = max(1, int(np.ceil(test_fraction * n))) if n > 1 else 0
        n_train = n - n_test
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])
