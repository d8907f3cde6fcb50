"""The MNIST-format sources: ``--data mnist`` (the IDX files found on this machine) and any folder
of MNIST-format IDX files given by path. The reader is :mod:`.idx`, imported when used, so
``python -m flowdsl.runtime.data.idx DIR`` runs it without a second copy in ``sys.modules``.
"""

from __future__ import annotations

from pathlib import Path

from flowdsl.runtime.data.base import Dataset
from flowdsl.runtime.data.registry import DataRequest, register_dataset

__all__: list[str] = []


@register_dataset(
    "mnist", kind="image", description="MNIST IDX files found on this machine, 1×28×28 (or 1×32×32 padded), 256 levels"
)
def _mnist(req: DataRequest) -> Dataset:
    from flowdsl.runtime.data.idx import find_mnist_dir, load_idx_dir

    return load_idx_dir(find_mnist_dir(), req.shape, req.levels, req.split, name="mnist")


def _is_idx_dir(path: Path) -> bool:
    from flowdsl.runtime.data.idx import is_idx_dir

    return is_idx_dir(path)


@register_dataset(
    "idx",
    kind="image",
    folder=_is_idx_dir,
    description="MNIST-format IDX files (train and t10k images and labels, .gz too)",
)
def _idx_folder(req: DataRequest) -> Dataset:
    from flowdsl.runtime.data.idx import load_idx_dir

    return load_idx_dir(req.path, req.shape, req.levels, req.split)
