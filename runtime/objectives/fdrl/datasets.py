"""The data of an FDRL run: a data set for a spec, optionally restricted to some classes (the
target, or a second data set as the translation source), and the validation split.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from flowdsl.errors import DataError

__all__ = ["load_data", "split_validation"]


def _select_classes(ds: Any, classes: Optional[list[int]], what: str) -> Any:
    if not classes:
        return ds
    if ds.labels is None:
        raise DataError(
            f"{what} {ds.name!r} has no labels, so classes {classes} cannot be selected", filename=str(ds.name)
        )
    keep = torch.isin(ds.labels, torch.as_tensor(list(classes), dtype=ds.labels.dtype))
    if not bool(keep.any()):
        raise DataError(f"{what} {ds.name!r} has no examples of classes {classes}", filename=str(ds.name))
    sub = ds.subset(torch.nonzero(keep).reshape(-1))
    sub.notes = list(ds.notes) + [f"classes {', '.join(map(str, classes))} only: {len(sub)} of {len(ds)}"]
    return sub


def load_data(
    spec: Any, name: Optional[str], split: str, seed: int, classes: Optional[list[int]], what: str = "data"
) -> Any:
    """``split`` of data set ``name`` (default: the spec's) for ``spec``, only ``classes`` if given."""
    from flowdsl.runtime.data import load_for_spec

    return _select_classes(load_for_spec(spec, name, split, seed=seed), classes, what)


def split_validation(ds: Any, fraction: float, most: int) -> tuple[Any, Optional[Any]]:
    """(train, validation): ``fraction`` of ``ds`` (at most ``most``) held out by a fixed permutation
    (``PCG64(0)``); (ds, None) when that leaves either part empty."""
    n_val = min(most, int(round(fraction * len(ds))))
    if n_val <= 0 or n_val >= len(ds):
        return ds, None
    perm = np.random.Generator(np.random.PCG64(0)).permutation(len(ds))
    return ds.subset(np.sort(perm[:-n_val]), "train"), ds.subset(np.sort(perm[-n_val:]), "val")
