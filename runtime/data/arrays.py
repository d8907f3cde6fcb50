"""User data from ``.npy`` / ``.npz`` arrays.

Layouts accepted for a spec input of shape S: (N, *S); for images (C, H, W) also (N, H, W) when
C = 1 and channels-last (N, H, W, C), which is transposed.

``.npz`` keys: ``train``/``test`` or ``x_train``/``x_test`` (optional labels ``y_train``/``y_test``,
contexts ``context_train``/``context_test``) give the split directly. A file with one array
(``.npy``, or a ``.npz`` whose only array — or whose ``x``/``data``/``images`` array — is used) is
split deterministically: a PCG64(0)
permutation, the last 10 % (rounded up) is the test split; a ``context`` array (else ``y`` or
``labels``) next to it, one row per example, is the examples' context for conditional specs
(:mod:`.context`), split alike.

Image specs need integer values: values below the spec's ``levels`` are taken as they are;
``uint8`` arrays with larger values are 8-bit data and are requantised when the spec asks for
coarser levels that divide 256 (e.g. ``levels=32``). Vector specs take any real values.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from flowdsl.compiler.limits import LIMITS
from flowdsl.errors import DataError
from flowdsl.runtime.data.base import Dataset, as_dataset, check_values, fixed_split, format_shape
from flowdsl.runtime.data.context import ContextProblem
from flowdsl.runtime.data.registry import DataRequest, register_dataset

__all__ = [
    "load_array_file",
    "load_in_memory",
    "in_memory_arrays",
    "remember_arrays",
    "remembered",
    "dataset_from_arrays",
    "arrange",
    "infer_levels",
]

_SINGLE_KEYS = ("x", "X", "data", "images", "arr_0")


def arrange(name: str, a: np.ndarray, input_shape) -> np.ndarray:
    """Bring ``a`` to (N, *input_shape) when it is in one of the accepted layouts."""
    shape = tuple(int(d) for d in input_shape)
    if a.shape[1:] == shape:
        return a
    if len(shape) == 3:
        c, h, w = shape
        if c == 1 and a.shape[1:] == (h, w):
            return a[:, None]
        if a.shape[1:] == (h, w, c):
            return np.moveaxis(a, -1, 1)
    raise DataError(
        f"data {name!r} has examples of shape {'×'.join(map(str, a.shape[1:]))} (array {tuple(a.shape)}) "
        f"but the spec's input is {format_shape(shape)}",
        filename=name,
    )


def infer_levels(name: str, a: np.ndarray, levels: int | None) -> int | None:
    """The number of levels of discrete data in ``a`` for a spec with ``levels`` (None: real data)."""
    if levels is None:
        return None
    if a.size == 0:
        return levels
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise DataError(
                f"data {name!r} holds non-integer values but the spec's input is an image with levels={levels}; "
                "give the raw integer values 0..levels-1",
                filename=name,
            )
    lo, hi = float(a.min()), float(a.max())
    if lo < 0:
        raise DataError(
            f"data {name!r} holds negative values ({lo:g}); image data must be in 0..levels-1", filename=name
        )
    if hi < levels:
        return levels
    if a.dtype == np.uint8 or hi < 256:
        return 256
    raise DataError(f"data {name!r} holds values up to {hi:g}, above the spec's levels={levels}", filename=name)


def _too_big(what: str, nbytes: int, name: str) -> DataError:
    limit = LIMITS.max_data_bytes
    return DataError(
        f"{what} would take {nbytes:,} bytes in memory, above the limit of {limit:,} (FLOWDSL_MAX_DATA_BYTES)",
        filename=name,
    )


def _header(f: BinaryIO, name: str, member: str = "") -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes) of the ``.npy`` stream ``f`` from its header alone (nothing allocated)."""
    where = f"member {member!r}: " if member else ""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=10_000)
        elif version in ((2, 0), (3, 0)):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=10_000)
        else:  # pragma: no cover - read_magic refuses other versions
            raise ValueError(f"unknown .npy version {version}")
    except Exception as e:  # noqa: BLE001 - numpy parses the header with Python's tokenizer: any error is a bad file
        raise DataError(f"cannot read array file: {where}{type(e).__name__}: {e}", filename=name) from None
    if dtype.hasobject:
        raise DataError(f"{where}array of Python objects (pickled data is not read)", filename=name)
    n = 1
    for d in shape:
        n *= int(d)
    return tuple(int(d) for d in shape), dtype, n * dtype.itemsize


def _check_npy(path: Path) -> None:
    """Refuse a ``.npy`` whose header asks for more memory than the limit or than the file holds."""
    name = str(path)
    with open(path, "rb") as f:
        shape, dtype, nbytes = _header(f, name)
        data_at = f.tell()
    if nbytes > LIMITS.max_data_bytes:
        raise _too_big(f"the array {shape} of {dtype}", nbytes, name)
    size = path.stat().st_size
    if size - data_at < nbytes:
        raise DataError(
            f"the header says {shape} of {dtype} ({nbytes:,} bytes) but the file holds {size - data_at:,} "
            "bytes of data (truncated or corrupt)",
            filename=name,
        )


def _check_npz(path: Path) -> None:
    """Refuse a ``.npz`` whose members expand beyond the limit: the uncompressed sizes in the zip
    directory (``ZipInfo.file_size``; reads stop there) and each member's ``.npy`` header are
    checked before any member is read."""
    name = str(path)
    limit = LIMITS.max_data_bytes
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            total = sum(i.file_size for i in infos)
            if total > limit:
                big = max(infos, key=lambda i: i.file_size)
                raise _too_big(
                    f"the archive's members ({len(infos)}, the largest {big.filename!r} of {big.file_size:,} bytes)",
                    total,
                    name,
                )
            for info in infos:
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    shape, dtype, nbytes = _header(f, name, info.filename)
                if nbytes > info.file_size:
                    raise DataError(
                        f"member {info.filename!r}: the header says {shape} of {dtype} ({nbytes:,} bytes) but the "
                        f"member holds {info.file_size:,} bytes (truncated or corrupt)",
                        filename=name,
                    )
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise DataError(f"cannot read array file: {e}", filename=name) from None


def _read(path: Path) -> tuple[dict[str, np.ndarray], bool]:
    """Arrays in the file, and whether it already separates train and test. Sizes are checked
    from the headers first (:func:`_check_npy`, :func:`_check_npz`): nothing larger than
    ``LIMITS.max_data_bytes`` is allocated."""
    try:
        if path.suffix == ".npy":
            _check_npy(path)
            return {"x": np.load(path, allow_pickle=False)}, False
        _check_npz(path)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read array file: {e}", filename=str(path)) from None
    return arrays, any(k in arrays for k in ("train", "x_train", "X_train"))


def _pick(arrays: dict[str, np.ndarray], keys) -> np.ndarray | None:
    for k in keys:
        if k in arrays:
            return arrays[k]
    return None


def load_array_file(path: str | os.PathLike, input_shape, levels, split: str = "train") -> Dataset:
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise DataError("no such data file", filename=name)
    arrays, has_split = _read(path)
    return dataset_from_arrays(name, arrays, has_split, input_shape, levels, split)


def in_memory_arrays(data: Any) -> dict[str, np.ndarray] | None:
    """The arrays of in-memory data given to ``train(spec, data=...)`` in Python: a numpy array or
    a torch tensor (N, *shape), or a dict of them (``train``/``test``, ``x_train``/``x_test``, ...);
    None when ``data`` is none of these (a name or a path)."""

    def as_array(v: Any) -> np.ndarray | None:
        if isinstance(v, np.ndarray):
            return v
        if type(v).__module__.startswith("torch") and hasattr(v, "detach"):  # a tensor, without importing torch
            return v.detach().cpu().numpy()
        return None

    a = as_array(data)
    if a is not None:
        return {"x": a}
    if isinstance(data, dict) and data:
        out = {}
        for k, v in data.items():
            arr = as_array(v)
            if arr is None:
                arr = np.asarray(v)
            out[str(k)] = arr
        return out
    return None


_REMEMBERED: dict[str, Any] = {}


def remember_arrays(data: Any) -> Any:
    """In-memory data as a name a run can store: ``data`` itself when it is a name or a path,
    else a label ``<array N×D sha256:…>`` (the content's hash, so the same array given again —
    e.g. to resume — gets the same label) under which :func:`load_for_spec` finds it again.
    The last few arrays are kept (they are the caller's objects, not copies)."""
    arrays = in_memory_arrays(data)
    if arrays is None:
        return data
    import hashlib

    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape};".encode())
        h.update(memoryview(a).cast("B") if a.dtype != object else repr(a).encode())
    shapes = (
        ", ".join(f"{k} {'×'.join(map(str, a.shape))}" for k, a in arrays.items())
        if len(arrays) > 1
        else ("×".join(map(str, next(iter(arrays.values())).shape)))
    )
    label = f"<array {shapes} sha256:{h.hexdigest()[:12]}>"
    _REMEMBERED.pop(label, None)
    _REMEMBERED[label] = data
    while len(_REMEMBERED) > 4:
        _REMEMBERED.pop(next(iter(_REMEMBERED)))
    return label


def remembered(label: Any) -> Any:
    """The in-memory data behind a label of :func:`remember_arrays` (None if unknown)."""
    return _REMEMBERED.get(label) if isinstance(label, str) else None


def load_in_memory(data: Any, input_shape, levels, split: str = "train", name: str = "<array>") -> Dataset:
    """A :class:`Dataset` from in-memory arrays (see :func:`in_memory_arrays`); same rules as files."""
    arrays = in_memory_arrays(data)
    if arrays is None:
        raise DataError(f"data of type {type(data).__name__} is neither a name, a path nor an array", filename=name)
    has_split = any(k in arrays for k in ("train", "x_train", "X_train"))
    return dataset_from_arrays(name, arrays, has_split, input_shape, levels, split, source="array")


def dataset_from_arrays(
    name: str,
    arrays: dict[str, np.ndarray],
    has_split: bool,
    input_shape,
    levels,
    split: str = "train",
    source: str = "file",
) -> Dataset:
    """The ``split`` of arrays read from a file (or given in memory): see the module docstring."""
    labels = None
    context: Any = None
    if has_split:
        sx = ("train", "x_train", "X_train") if split == "train" else ("test", "x_test", "X_test")
        x = _pick(arrays, sx)
        if x is None:
            raise DataError(
                f"the {source} has a train array but no {split} array (keys: {', '.join(arrays)})", filename=name
            )
        labels = _pick(arrays, ("y_train",) if split == "train" else ("y_test",))
        ckey = f"context_{split}"
        context = arrays.get(ckey)
        if context is None:  # a y array of vectors is a vector context too
            context = labels
        if context is None:
            keys = ", ".join(arrays)
            context = ContextProblem(f"the {source} {name!r} has no {ckey} or y_{split} array (keys: {keys})")
        context, labels = _rows(name, context, labels, len(x), ckey, f"y_{split}")
        note = f"{name}: arrays for the {split} split"
    else:
        x = _pick(arrays, _SINGLE_KEYS)
        if x is None:
            if len(arrays) != 1:
                raise DataError(
                    f"cannot tell which array holds the data (keys: {', '.join(arrays)}); "
                    "name it 'x' or use 'x_train'/'x_test'",
                    filename=name,
                )
            x = next(iter(arrays.values()))
        labels = _pick(arrays, ("y", "labels"))
        if x.ndim < 2:
            raise DataError(f"array of shape {x.shape}: expected (N, ...) with one example per row", filename=name)
        tr, te = fixed_split(len(x), test_fraction=0.1, seed=0)
        idx = tr if split == "train" else te
        context = arrays.get("context")
        if context is None:  # a y/labels array of vectors is a vector context too
            context = labels
        if context is None:
            keys = ", ".join(arrays)
            context = ContextProblem(f"the {source} {name!r} has no context, y or labels array (keys: {keys})")
        context, labels = _rows(name, context, labels, len(x), "context", "y/labels")
        labels = labels[idx] if labels is not None else None
        context = context[idx] if isinstance(context, np.ndarray) else context
        x = x[idx]
        note = f"{name}: {split} split of one array (fixed PCG64(0) permutation, 10% test)"
    if x.dtype == object or x.ndim < 2:
        raise DataError(
            f"array of shape {getattr(x, 'shape', '?')} and type {x.dtype}: expected numbers (N, ...)", filename=name
        )
    x = arrange(name, x, input_shape)
    check_values(name, x[:0], discrete=levels is not None)  # the type only: complex, objects, strings
    data_levels = infer_levels(name, x, levels)
    if data_levels is None and not np.issubdtype(x.dtype, np.number):
        raise DataError(f"array of type {x.dtype} is not numeric", filename=name)
    if data_levels is None and not np.all(np.isfinite(x)):
        raise DataError("data holds NaN or infinite values", filename=name)
    return as_dataset(
        name,
        x,
        input_shape=input_shape,
        levels=levels,
        data_levels=data_levels,
        labels=labels,
        split=split,
        notes=[note],
        context=context,
    )


def _rows(name: str, context: Any, labels: Any, n: int, ckey: str, ykey: str) -> tuple[Any, Any]:
    """The context and labels arrays when they have one row per example; otherwise labels None
    (as unconditional specs always had it) and a :class:`ContextProblem` in place of a context
    that does not fit, reported if a spec asks for a context."""
    if isinstance(context, np.ndarray) and (context.ndim == 0 or context.shape[0] != n):
        context = ContextProblem(f"the {ckey!r} array of {name!r} has shape {context.shape} for {n:,} examples")
    if labels is not None and labels.shape != (n,):
        if not isinstance(context, np.ndarray):
            context = ContextProblem(f"the {ykey!r} array of {name!r} has shape {labels.shape} for {n:,} examples")
        labels = None
    return context, labels


@register_dataset(
    "arrays",
    kind="any",
    suffixes=(".npy", ".npz"),
    description="arrays (N, *shape): x_train/x_test keys, or a fixed 90/10 split",
)
def _array_file(req: DataRequest) -> Dataset:
    return load_array_file(req.path, req.shape, req.levels, req.split)
