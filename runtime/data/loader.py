"""One entry point for every data source: :func:`load_dataset` (and :func:`load_for_spec`).

``name_or_path`` is one of

====================  =====================================================================
``digits``            scikit-learn 8×8 digits, 1×8×8, 17 levels (:mod:`.digits`)
``mnist``             MNIST IDX files found on this machine (:mod:`.idx`)
``patches``           crops of scikit-image's bundled photos (alias ``photos``; :mod:`.patches`)
``moons``, ``8gaussians``, ``checkerboard``, ``pinwheel``   2-D toy densities (:mod:`.toy2d`)
a directory           MNIST-format IDX files, or PNG/JPEG images (:mod:`.idx`, :mod:`.images`)
a ``.npy``/``.npz``   user arrays (:mod:`.arrays`)
====================  =====================================================================

Relative paths are tried from the current directory, then from ``base_dir`` (the spec file's
folder). Built-in names win over files of the same name: write ``./digits`` for a folder
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
from flowdsl.runtime.data.toy2d import TOY_ALIASES, TOY_SAMPLERS

__all__ = ["DATASET_NAMES", "load_dataset", "load_for_spec", "resolve_data_path"]

DATASET_NAMES = ("digits", "mnist", "patches", "photos") + tuple(TOY_SAMPLERS) + tuple(TOY_ALIASES)


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
    builtin = not explicit_path and (key in ("digits", "mnist", "patches", "photos") or key in TOY_SAMPLERS or key in TOY_ALIASES)
    path = None if builtin else resolve_data_path(name, base_dir)
    if key == "digits" and path is None:
        from flowdsl.runtime.data.digits import load_digits

        return load_digits(shape, levels, split)
    if key == "mnist" and path is None:
        from flowdsl.runtime.data.idx import find_mnist_dir, load_idx_dir

        return load_idx_dir(find_mnist_dir(), shape, levels, split, name="mnist")
    if key in ("patches", "photos") and path is None:
        from flowdsl.runtime.data.patches import load_patches

        return load_patches(shape, levels, split, n=n)
    if (key in TOY_SAMPLERS or key in TOY_ALIASES) and path is None:
        from flowdsl.runtime.data.toy2d import load_toy

        return load_toy(key, shape, levels, split, seed=seed, n=n)
    if path is None:
        looks_like_path = any(c in name for c in "/\\.") or name.endswith((".npy", ".npz"))
        if looks_like_path:
            raise DataError("no such data file or folder", filename=name)
        raise DataError(
            f"unknown data set {name!r}{did_you_mean(key, DATASET_NAMES)}; known: digits, mnist, patches, "
            "moons, 8gaussians, checkerboard, pinwheel, or a path to .npy/.npz or a folder",
            filename=name,
        )
    if path.is_dir():
        from flowdsl.runtime.data.idx import is_idx_dir, load_idx_dir
        from flowdsl.runtime.data.images import is_image_dir, load_image_dir

        if is_idx_dir(path):
            return load_idx_dir(path, shape, levels, split)
        if is_image_dir(path):
            return load_image_dir(path, shape, levels, split)
        raise DataError("folder holds neither MNIST-format IDX files nor PNG/JPEG images", filename=str(path))
    if path.suffix.lower() in (".npy", ".npz"):
        from flowdsl.runtime.data.arrays import load_array_file

        return load_array_file(path, shape, levels, split)
    raise DataError("unsupported data file (expected .npy, .npz or a folder)", filename=str(path))


def load_for_spec(spec: Any, data: str | None = None, split: str = "train", seed: int | None = None, n: int | None = None) -> Dataset:
    """:func:`load_dataset` for a parsed spec: its ``input``, its ``train(data=…)`` unless ``data``."""
    name = data or getattr(getattr(spec, "train", None), "data", None)
    if not name:
        raise DataError("no data: give --data or train(data=...) in the spec", filename=getattr(spec, "filename", "<string>"))
    inp = spec.input
    levels = getattr(inp, "levels", None) if getattr(inp, "kind", "image") == "image" else None
    if seed is None:
        seed = int(getattr(getattr(spec, "train", None), "seed", 0) or 0)
    fname = getattr(spec, "filename", "") or ""
    base = os.path.dirname(fname) if fname and not fname.startswith("<") else None
    try:
        return load_dataset(name, tuple(inp.shape), levels, split, seed, n=n, base_dir=base)
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
