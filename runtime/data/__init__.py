"""Data sets and dequantisation for training (no network access at run time).

Entry point: :func:`load_dataset` (see :mod:`flowdsl.runtime.data.loader`); helpers for
dequantisation and bits/dim in :mod:`flowdsl.runtime.data.dequantize`.
"""
from __future__ import annotations

from flowdsl.runtime.data.base import Dataset, format_shape
from flowdsl.runtime.data.dequantize import bits_per_dim, dequantize, nats_to_bits_per_dim, quantize
from flowdsl.runtime.data.loader import DATASET_NAMES, load_dataset, load_for_spec

__all__ = [
    "Dataset",
    "format_shape",
    "load_dataset",
    "load_for_spec",
    "DATASET_NAMES",
    "dequantize",
    "quantize",
    "bits_per_dim",
    "nats_to_bits_per_dim",
]
