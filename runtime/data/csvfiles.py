"""User data from ``.csv`` files of numbers (vector inputs).

One example per row, one column per input dimension: for ``input vector(dim=D)`` every row has
D cells. Cells are separated by commas (blanks around them are ignored; empty lines are skipped;
lines starting with ``#`` are comments). A first row whose cells are all non-numeric is a header
and is skipped; any other non-numeric cell is a :class:`DataError` naming the file, the row and
the column (1-based, as a spreadsheet shows them). The file's size is checked against
``LIMITS.max_data_bytes`` before it is read. The split is the fixed 90/10 one of one array (a
PCG64(0) permutation, the last 10 % rounded up is the test split).

Shapes: a file of N rows and D columns gives x (N, D) float64 -> the dataset's float32 (N, D).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from flowdsl.compiler.limits import LIMITS
from flowdsl.errors import DataError
from flowdsl.runtime.data.base import Dataset, as_dataset, fixed_split, format_shape
from flowdsl.runtime.data.registry import DataRequest, register_dataset

__all__ = ["read_csv", "load_csv_file"]


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def read_csv(path: str | os.PathLike) -> np.ndarray:
    """The numbers of a CSV file as a float64 array (N, D) (see the module docstring).

    Raises:
        DataError: unreadable, too large, ragged rows, or a non-numeric cell (with its row and column).
    """
    p = Path(path)
    name = str(p)
    try:
        size = p.stat().st_size
    except OSError as e:
        raise DataError(f"cannot read CSV file: {e.strerror or e}", filename=name) from None
    if not p.is_file():
        raise DataError("cannot read CSV file: not a regular file", filename=name)
    # a cell takes at least two bytes ("0,"), a float64 eight: the values need at most 4x the file,
    # and the blocks of rows are joined once at the end (another 4x)
    if 8 * size > LIMITS.max_data_bytes:
        raise DataError(
            f"CSV file of {size:,} bytes may take {8 * size:,} bytes in memory, above the limit of "
            f"{LIMITS.max_data_bytes:,} (FLOWDSL_MAX_DATA_BYTES)",
            filename=name,
        )
    blocks: list[np.ndarray] = []  # float64 blocks of up to 4,096 rows (Python floats cost 4x more)
    rows: list[list[float]] = []
    width = None
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            for row_no, row in enumerate(csv.reader(f), start=1):
                cells = [c.strip() for c in row]
                if not cells or all(c == "" for c in cells) or cells[0].startswith("#"):
                    continue
                values = [_number(c) for c in cells]
                if any(v is None for v in values):
                    if not rows and not blocks and width is None and all(v is None for v in values):
                        width = len(cells)  # a header row
                        continue
                    col = next(i for i, v in enumerate(values) if v is None)
                    raise DataError(f"row {row_no}, column {col + 1}: {cells[col]!r} is not a number", filename=name)
                if width is None:
                    width = len(values)
                if len(values) != width:
                    raise DataError(
                        f"row {row_no} has {len(values)} cells but the first row has {width}", filename=name
                    )
                rows.append(values)  # type: ignore[arg-type]
                if len(rows) == 4096:
                    blocks.append(np.asarray(rows, dtype=np.float64))
                    rows = []
    except UnicodeDecodeError as e:
        raise DataError(f"CSV file is not UTF-8 text (byte {e.start})", filename=name) from None
    except csv.Error as e:
        raise DataError(f"cannot read CSV file: {e}", filename=name) from None
    except OSError as e:
        raise DataError(f"cannot read CSV file: {e.strerror or e}", filename=name) from None
    if rows:
        blocks.append(np.asarray(rows, dtype=np.float64))
    if not blocks:
        raise DataError("CSV file holds no rows of numbers", filename=name)
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def load_csv_file(path: str | os.PathLike, input_shape, levels, split: str = "train") -> Dataset:
    name = str(path)
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 1:
        raise DataError(
            f"CSV files hold vectors (one example per row); the spec's input is {format_shape(shape, levels)}",
            filename=name,
        )
    x = read_csv(path)
    if x.shape[1] != shape[0]:
        raise DataError(
            f"CSV rows have {x.shape[1]} numbers but the spec's input is a vector of {shape[0]} "
            f"({format_shape(shape)})",
            filename=name,
        )
    tr, te = fixed_split(len(x), test_fraction=0.1, seed=0)
    x = x[tr if split == "train" else te]
    note = f"{name}: {split} split of {len(tr) + len(te):,} CSV rows (fixed PCG64(0) permutation, 10% test)"
    if levels is not None and not np.all(x == np.round(x)):  # pragma: no cover - vector inputs have no levels
        raise DataError("CSV values must be integers for a discrete input", filename=name)
    return as_dataset(
        name,
        x,
        input_shape=shape,
        levels=None,
        data_levels=None,
        split=split,
        notes=[note],
    )


@register_dataset(
    "csv",
    kind="vector",
    suffixes=(".csv",),
    description="numbers, one example per row (header optional; a bad cell is named by row and column)",
)
def _csv_file(req: DataRequest) -> Dataset:
    return load_csv_file(req.path, req.shape, req.levels, req.split)
