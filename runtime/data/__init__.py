"""Data sets and dequantisation for training (no network access at run time).

Entry point: :func:`load_dataset` (see :mod:`flowdsl.runtime.data.loader`); the data sources
register with ``@register_dataset`` (:mod:`flowdsl.runtime.data.registry`) in their modules,
imported here explicitly; helpers for dequantisation and bits/dim in
:mod:`flowdsl.runtime.data.dequantize`.
"""

from __future__ import annotations

# each module registers its sources; formats are tried in this order (IDX folders, image folders, arrays, CSV)
from flowdsl.runtime.data import digits, mnist, patches, toy2d, ctoy2d, tabular, images, arrays, csvfiles  # noqa: F401  # isort: skip
from flowdsl.runtime.data.base import Dataset, format_shape
from flowdsl.runtime.data.dequantize import bits_per_dim, dequantize, nats_to_bits_per_dim, quantize
from flowdsl.runtime.data.loader import load_dataset, load_for_spec
from flowdsl.runtime.data.registry import (
    DataRequest,
    data_sources,
    dataset_names,
    describe_sources,
    find_dataset,
    register_dataset,
    unregister_dataset,
)

__all__ = [
    "Dataset",
    "DataRequest",
    "format_shape",
    "load_dataset",
    "load_for_spec",
    "register_dataset",
    "unregister_dataset",
    "find_dataset",
    "data_sources",
    "dataset_names",
    "describe_sources",
    "dequantize",
    "quantize",
    "bits_per_dim",
    "nats_to_bits_per_dim",
]
