"""User data from a folder of PNG/JPEG images.

Files ``*.png``, ``*.jpg``, ``*.jpeg`` (any case) are found recursively and sorted by path.
When the folder has ``train/`` and ``test/`` subfolders they are the splits; otherwise a fixed
PCG64(0) permutation puts the last 10 % (rounded up) in the test split. Images in class
subfolders (``cats/…``, ``dogs/…``) get labels: the index of the first-level folder name in
sorted order (with ``train/`` and ``test/``: of the class folders of both, so the splits number the
classes alike); they are the context of a spec that declares ``context label(classes=K)``.

Colour modes follow the spec's channels (1: ``L``, 3: ``RGB``; alpha is dropped). Images must
already have the spec's height and width — they are not resized; a mismatch is a
:class:`DataError` naming both shapes. Values are the raw 8-bit values (256 levels).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

from flowdsl.compiler.limits import LIMITS
from flowdsl.errors import DataError
from flowdsl.runtime.data.base import Dataset, as_dataset, fixed_split, format_shape
from flowdsl.runtime.data.context import ContextProblem
from flowdsl.runtime.data.registry import DataRequest, register_dataset

__all__ = ["IMAGE_SUFFIXES", "list_images", "is_image_dir", "load_image_dir"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(directory: str | os.PathLike) -> list[Path]:
    d = Path(directory)
    return sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def is_image_dir(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return d.is_dir() and any(True for _ in list_images(d)[:1])


@contextlib.contextmanager
def _open_header_only(image_module, path: Path):
    """``PIL.Image.open`` without PIL's own decompression-bomb check (warning or error): the size
    is checked here, from the header, against ``LIMITS.max_image_pixels`` before decoding."""
    saved = image_module.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", image_module.DecompressionBombWarning)
        image_module.MAX_IMAGE_PIXELS = None
        try:
            im = image_module.open(path)
        finally:
            image_module.MAX_IMAGE_PIXELS = saved
        with im:
            yield im


_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def _class_names(files: list[Path], root: Path) -> list[str]:
    """The sorted first-level subfolders of ``root`` that hold some of ``files`` (the classes)."""
    return sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})


def _read_images(
    files: list[Path], root: Path, shape, notes: list[str] | None = None, classes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``files`` into (N, C, H, W) uint8. Every file's size is read from its header and
    checked (the spec's height and width; at most ``LIMITS.max_image_pixels``) before it is
    decoded; the whole set is checked against ``LIMITS.max_data_bytes`` before allocating.
    Colour conversions are announced in ``notes``."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    if c not in (1, 3):
        raise DataError(f"image folders give 1 or 3 channels, the spec's input has {c}", filename=str(root))
    need = len(files) * c * h * w * 5  # the uint8 images and their float32 copy
    if need > LIMITS.max_data_bytes:
        raise DataError(
            f"{len(files):,} images of {format_shape(shape)} would take {need:,} bytes in memory, above the limit "
            f"of {LIMITS.max_data_bytes:,} (FLOWDSL_MAX_DATA_BYTES)",
            filename=str(root),
        )
    out = np.empty((len(files), c, h, w), dtype=np.uint8)
    converted: dict[str, int] = {}
    classes = _class_names(files, root) if classes is None else classes
    cls_index = {n: i for i, n in enumerate(classes)}
    labels = np.full(len(files), -1, dtype=np.int64)
    for i, p in enumerate(files):
        try:
            with _open_header_only(Image, p) as im:  # reads the header only; decoding happens in convert()
                iw, ih = im.size
                if iw * ih > LIMITS.max_image_pixels:
                    raise DataError(
                        f"image of {iw}×{ih} pixels is above the limit of {LIMITS.max_image_pixels:,} pixels "
                        "(FLOWDSL_MAX_IMAGE_PIXELS); it was not decoded",
                        filename=str(p),
                    )
                if (ih, iw) != (h, w):
                    raise DataError(
                        f"image of shape {format_shape((c, ih, iw))} but the spec's input is {format_shape(shape)} "
                        "(images are not resized)",
                        filename=str(p),
                    )
                mode = im.mode
                want = "L" if c == 1 else "RGB"
                grey = mode in _GREY_MODES
                if (c == 1 and not grey) or (c == 3 and grey):
                    converted[f"{mode} → {want}"] = converted.get(f"{mode} → {want}", 0) + 1
                im = im.convert(want)
                a = np.asarray(im, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError, EOFError) as e:
            # PIL reports broken chunks as SyntaxError, truncated ones as OSError or EOFError
            raise DataError(f"cannot read image: {e}", filename=str(p)) from None
        if a.shape[:2] != (h, w):
            raise DataError(
                f"image of shape {format_shape((c, *a.shape[:2]))} but the spec's input is {format_shape(shape)} "
                "(images are not resized)",
                filename=str(p),
            )
        out[i] = a.reshape(h, w, c).transpose(2, 0, 1)
        parts = p.relative_to(root).parts
        if len(parts) > 1:
            labels[i] = cls_index[parts[0]]
    if notes is not None:
        for what, k in sorted(converted.items()):
            how = "to grey (PIL's ITU-R 601-2 luma)" if what.endswith("L") else "to RGB (grey repeated)"
            notes.append(
                f"converted {k} of {len(files)} images {how}: {what}, for the spec's {c} channel{'s' * (c > 1)}"
            )
    return out, labels


def load_image_dir(directory: str | os.PathLike, input_shape, levels, split: str = "train") -> Dataset:
    root = Path(directory)
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        raise DataError(
            f"a folder of images is image data; the spec's input is a vector of shape {format_shape(shape)}",
            filename=str(root),
        )
    if (root / "train").is_dir() and (root / "test").is_dir():
        sub = root / ("train" if split == "train" else "test")
        files = list_images(sub)
        notes: list[str] = []
        # one class numbering for both splits: the class folders of train/ and test/ together
        classes = sorted({c for d in ("train", "test") for c in _class_names(list_images(root / d), root / d)})
        x, labels = _read_images(files, sub, shape, notes, classes) if files else (None, None)
        notes.insert(0, f"images in {sub}")
    else:
        files = list_images(root)
        tr, te = fixed_split(len(files), test_fraction=0.1, seed=0)
        files = [files[i] for i in (tr if split == "train" else te)]
        notes = []
        x, labels = _read_images(files, root, shape, notes) if files else (None, None)
        notes.insert(0, f"{split} split of the images in {root} (fixed PCG64(0) permutation, 10% test)")
    if not files:
        raise DataError(f"no PNG/JPEG images for the {split} split", filename=str(root))
    context = None
    if labels is not None and (labels < 0).any():
        loose = [f for f, k in zip(files, labels) if k < 0]
        context = ContextProblem(
            f"{len(loose):,} images of {str(root)!r} are not in a class subfolder (e.g. {loose[0]}), so the "
            "folder has no labels"
        )
        labels = None
    return as_dataset(
        str(root),
        x,
        input_shape=input_shape,
        levels=levels,
        data_levels=256,
        labels=labels,
        split=split,
        notes=notes,
        context=context,
    )


@register_dataset(
    "images",
    kind="image",
    folder=is_image_dir,
    description="PNG/JPEG images (train/ and test/ subfolders, or a fixed 90/10 split; not resized)",
)
def _image_folder(req: DataRequest) -> Dataset:
    return load_image_dir(req.path, req.shape, req.levels, req.split)
