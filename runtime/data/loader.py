"""One entry point for every data source: :func:`load_dataset` (and :func:`load_for_spec`).

``name_or_path`` is a name from the data-source table (:mod:`.registry`; the built-in sources
register in :mod:`.digits`, :mod:`.mnist`, :mod:`.patches`, :mod:`.toy2d` and :mod:`.tabular`), or a
path to a file or folder that one of the table's formats reads (IDX folders in :mod:`.mnist`, image
folders in :mod:`.images`, ``.npy``/``.npz`` in :mod:`.arrays`). ``python -c "import
flowdsl.runtime.data as d; print(d.describe_sources())"`` prints the table.

Relative paths are tried from the current directory, then from ``base_dir`` (the spec file's
folder). Registered names win over files of the same name: write ``./digits`` for a folder
called ``digits``. Every problem — unknown name, missing file, shape or levels that do not fit the spec —
is a :class:`flowdsl.errors.DataError` whose message names what was found and what the spec's
``input`` asks for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flowdsl.errors import DataError, did_you_mean
from flowdsl.runtime.data.base import Dataset
from flowdsl.runtime.data.context import attach_context, declared_context, split_data_option
from flowdsl.runtime.data.registry import DataRequest, data_formats, dataset_names, find_dataset

__all__ = ["load_dataset", "load_for_spec", "resolve_data_path"]


def resolve_data_path(name: str, base_dir: str | os.PathLike | None = None) -> Path | None:
    """The existing file or folder ``name`` refers to, or None."""
    p = Path(os.path.expanduser(name))
    if p.exists():
        return p
    if base_dir is not None and not p.is_absolute():
        q = Path(base_dir) / p
        if q.exists():
            return q
    return None


def _neither(items: list[str]) -> str:
    if len(items) <= 1:
        return f"no {items[0] if items else 'data a format reads'}"
    if len(items) == 2:
        return f"neither {items[0]} nor {items[1]}"
    return f"none of {', '.join(items[:-1])} or {items[-1]}"


def load_dataset(
    name_or_path: str | os.PathLike,
    input_shape,
    levels: int | None = None,
    split: str = "train",
    seed: int = 0,
    *,
    n: int | None = None,
    base_dir: str | os.PathLike | None = None,
) -> Dataset:
    """See :func:`_load_dataset` (the same arguments). File-system errors on the way (a folder
    that cannot be listed, a name too long, a NUL in the path) are :class:`DataError` too."""
    where = os.fspath(name_or_path)
    try:
        return _load_dataset(name_or_path, input_shape, levels, split, seed, n=n, base_dir=base_dir)
    except OSError as e:
        raise DataError(f"cannot read data: {e.strerror or e}", filename=str(e.filename or where)) from None
    except ValueError as e:
        if "null" not in str(e):
            raise
        raise DataError(f"cannot read data: {e}", filename=where.replace("\x00", "\\x00")) from None


def _load_dataset(
    name_or_path: str | os.PathLike,
    input_shape,
    levels: int | None = None,
    split: str = "train",
    seed: int = 0,
    *,
    n: int | None = None,
    base_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Load ``split`` (``"train"`` or ``"test"``) of a data set for a spec input.

    Args:
        name_or_path: a data set name or a path (see the module docstring).
        input_shape: the spec's input shape, (C, H, W) or (D,).
        levels: the spec's quantisation levels for images; None for vectors.
        split: ``"train"`` or ``"test"``.
        seed: seed of generated data (toy densities); fixed data sets ignore it.
        n: number of examples of generated data (toy densities, patches).
        base_dir: folder for relative paths (the spec file's folder).

    Returns:
        A :class:`Dataset`; ``x`` holds raw discrete values for images, real values for vectors.

    Raises:
        DataError: unknown name, unreadable file, or data that does not fit ``input_shape``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    shape = tuple(int(d) for d in input_shape)
    name = os.fspath(name_or_path)
    key = name.lower()
    explicit_path = isinstance(name_or_path, os.PathLike) or any(c in name for c in "/\\") or name.startswith(".")
    source = None if explicit_path else find_dataset(key)
    if source is not None:
        return source.load(DataRequest(key, shape, levels, split, seed, n))
    path = resolve_data_path(name, base_dir)
    formats = data_formats()
    suffixes = [s for f in formats for s in f.suffixes]
    if path is None:
        looks_like_path = any(c in name for c in "/\\.") or name.lower().endswith(tuple(suffixes))
        if looks_like_path:
            raise DataError("no such data file or folder", filename=name)
        names = dataset_names()
        raise DataError(
            f"unknown data set {name!r}{did_you_mean(key, names)}; known: {', '.join(dataset_names(aliases=False))}, "
            f"or a path to {'/'.join(suffixes) or 'a file'} or a folder",
            filename=name,
        )
    for fmt in formats:
        if fmt.reads(path):
            return fmt.load(DataRequest(name, shape, levels, split, seed, n, path))
    if path.is_dir():
        folders = [f.description.split(" (")[0] for f in formats if f.folder is not None]
        raise DataError(f"folder holds {_neither(folders)}", filename=str(path))
    expected = ", ".join(suffixes) or "no file"
    raise DataError(f"unsupported data file (expected {expected} or a folder)", filename=str(path))


def load_for_spec(
    spec: Any, data: Any = None, split: str = "train", seed: int | None = None, n: int | None = None
) -> Dataset:
    """:func:`load_dataset` for a parsed spec: its ``input``, its ``train(data=…)`` unless ``data``.

    For a spec that declares a ``context`` the dataset's ``context`` is the checked tensor the model
    takes (:func:`flowdsl.runtime.data.context.attach_context`; a name may end with a data option,
    ``digits+lowres``); for other specs it is None.

    ``data`` may also be in-memory arrays (a numpy array, a torch tensor, or a dict of them:
    :func:`flowdsl.runtime.data.arrays.load_in_memory`)."""
    from flowdsl.runtime.data.arrays import in_memory_arrays, load_in_memory, remembered

    inp = spec.input
    label = data if isinstance(data, str) and data.startswith("<array ") else "<array>"
    if remembered(data) is not None:  # a label of remember_arrays: the arrays a Python caller gave
        data = remembered(data)
    elif isinstance(data, str) and data.startswith("<array "):
        raise DataError(
            "in-memory data is gone (a run trained on an array resumes only with the array given again)",
            filename=label,
        )
    decl = declared_context(spec)
    if in_memory_arrays(data) is not None:
        levels = getattr(inp, "levels", None) if getattr(inp, "kind", "image") == "image" else None
        return attach_context(load_in_memory(data, tuple(inp.shape), levels, split, name=label), decl, label)
    if data is not None and not isinstance(data, (str, os.PathLike)):
        raise DataError(
            f"data must be a data set name, a path, or an array (numpy or torch), not {type(data).__name__}",
            filename="data",
        )
    name = os.fspath(data) if data is not None and os.fspath(data) else None
    name = name or getattr(getattr(spec, "train", None), "data", None)
    if not name:
        raise DataError(
            "no data: give --data or train(data=...) in the spec", filename=getattr(spec, "filename", "<string>")
        )
    levels = getattr(inp, "levels", None) if getattr(inp, "kind", "image") == "image" else None
    if seed is None:
        seed = int(getattr(getattr(spec, "train", None), "seed", 0) or 0)
    fname = getattr(spec, "filename", "") or ""
    base = os.path.dirname(fname) if fname and not fname.startswith("<") else None
    base_name, option = split_data_option(name)
    if option is not None and resolve_data_path(name, base) is not None:
        base_name, option = name, None  # a file or folder whose name ends with the option
    try:
        ds = load_dataset(base_name, tuple(inp.shape), levels, split, seed, n=n, base_dir=base)
        return attach_context(ds, decl, name, option)
    except DataError as e:
        spec_data = getattr(getattr(spec, "train", None), "data", None)
        if data and data != spec_data:  # named on the command line: reported as it is
            raise
        # named in the spec's train(data=...): point at that argument
        span = spec.train.arg_spans.get("data")
        if span is None or not span.known:
            raise
        raise DataError(
            e.message,
            filename=fname or "<string>",
            span=span,
            source=getattr(spec, "source", None),
            notes=(*e.notes, f"data: {e.filename}"),
        ) from None
