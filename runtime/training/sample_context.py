"""The contexts samples of a conditional flow are drawn with (``flowdsl sample``, ``samples.png``).

* ``--context VALUE``: one context for every sample: a class 0…K−1 for ``context label(classes=K)``,
  D comma-separated numbers for ``context vector(dim=D)``; image contexts come from a file.
* ``--context-file FILE`` (``.npy``, or ``.npz`` with a ``context`` array): N contexts (N, *shape)
  (or one context without the batch axis; labels (N,) integers). The samples are split into N
  rows, one per context: each context gets ⌈n/N⌉ samples.
* neither: for labels **one row per class** (⌈n/K⌉ samples of each class, class k in row k); for
  vectors and images the contexts of the first ⌈√n⌉ test examples of the run's data, one row
  each (:func:`default_contexts`).

Every value is checked against the spec's declaration here (a :class:`~flowdsl.errors.DataError`
naming the flag or file and what the spec declares), before the model sees it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from flowdsl.errors import DataError
from flowdsl.runtime.data.context import ContextDecl, declared_context

__all__ = [
    "SampleContexts",
    "context_summary",
    "parse_context_value",
    "read_context_file",
    "rows_of",
    "default_contexts",
    "sample_contexts",
]


@dataclass
class SampleContexts:
    """Contexts for a grid of samples: ``per_sample`` (n, *shape) holds sample i's context; the
    grid has ``cols`` samples per row (None: the default square grid); ``title`` is added to
    pictures' titles."""

    per_sample: Tensor
    cols: Optional[int]
    title: str


def context_summary(spec: Any) -> Optional[str]:
    """``"context label(classes=10)"`` for a conditional spec (what ``summary.json`` records), else None."""
    decl = declared_context(spec)
    return None if decl is None else decl.describe()


def parse_context_value(text: str, decl: ContextDecl, flag: str = "--context") -> Tensor:
    """The context one ``--context`` value gives: a long scalar (labels) or a float (D,) vector."""
    s = str(text).strip()
    if decl.kind == "label":
        try:
            k = int(s)
        except ValueError:
            raise DataError(
                f"{flag} {text!r} is not a class: the run's spec declares {decl.describe()}, so give an integer "
                f"0..{decl.classes - 1}",
                filename=flag,
            ) from None
        if not 0 <= k < decl.classes:
            raise DataError(
                f"{flag} {k} is outside 0..{decl.classes - 1}: the run's spec declares {decl.describe()}", filename=flag
            )
        return torch.tensor(k, dtype=torch.long)
    if decl.kind == "vector":
        parts = [p for p in s.replace(" ", ",").split(",") if p]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise DataError(
                f"{flag} {text!r} is not a list of numbers: the run's spec declares {decl.describe()}, so give "
                f"{decl.shape[0]} comma-separated numbers",
                filename=flag,
            ) from None
        if len(values) != decl.shape[0] or not all(math.isfinite(v) for v in values):
            raise DataError(
                f"{flag} {text!r} gives {len(values)} number{'s' * (len(values) != 1)}"
                f"{'' if all(math.isfinite(v) for v in values) else ' (not all finite)'}: the run's spec declares "
                f"{decl.describe()}, so give {decl.shape[0]} finite comma-separated numbers",
                filename=flag,
            )
        return torch.tensor(values, dtype=torch.float32)
    raise DataError(
        f"the run's spec declares {decl.describe()}: give the context image with --context-file FILE.npy", filename=flag
    )


def read_context_file(path: str | os.PathLike, decl: ContextDecl) -> Tensor:
    """The contexts (N, *shape) in an ``.npy`` (or an ``.npz``'s ``context`` array), checked
    against ``decl``; one context without the batch axis becomes N = 1."""
    from flowdsl.compiler.limits import LIMITS
    from flowdsl.runtime.data.context import check_context_array

    p = Path(path)
    name = str(p)
    if not p.is_file():
        raise DataError("no such context file", filename=name)
    if p.suffix.lower() not in (".npy", ".npz"):
        raise DataError("a context file is an .npy array (or an .npz with a 'context' array)", filename=name)
    if p.stat().st_size > LIMITS.max_data_bytes:
        raise DataError(f"the file is larger than the limit of {LIMITS.max_data_bytes:,} bytes", filename=name)
    try:
        if p.suffix.lower() == ".npy":
            a = np.load(p, allow_pickle=False)
        else:
            with np.load(p, allow_pickle=False) as z:
                if "context" not in z.files:
                    raise DataError(f"the archive has no 'context' array (keys: {', '.join(z.files)})", filename=name)
                a = z["context"]
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read the context file: {e}", filename=name) from None
    a = np.asarray(a)
    if a.ndim == len(decl.shape):  # one context without the batch axis
        a = a[None]
    a = check_context_array(name, a, len(a) if a.ndim else 0)
    if len(a) == 0:
        raise DataError("the context file holds no contexts", filename=name)
    if tuple(a.shape[1:]) != decl.shape:
        raise DataError(
            f"the context file holds contexts of shape {'×'.join(map(str, a.shape[1:])) or 'one number'} "
            f"(array {tuple(a.shape)}) but the run's spec declares {decl.describe()} "
            f"(one context: {'×'.join(map(str, decl.shape)) or 'one integer'})",
            filename=name,
        )
    if decl.kind == "label":
        if not np.issubdtype(a.dtype, np.integer) and not np.all(a == np.round(a)):
            raise DataError(f"the context file holds non-integer labels; {decl.describe()}", filename=name)
        bad = np.flatnonzero((a < 0) | (a >= decl.classes))
        if bad.size:
            raise DataError(
                f"label {a[bad[0]]:g} (row {int(bad[0])}) is outside 0..{decl.classes - 1}: the run's spec declares "
                f"{decl.describe()}",
                filename=name,
            )
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def rows_of(contexts: Tensor, n: int, title: str = "") -> SampleContexts:
    """``n`` samples in rows of one context each: ⌈n/N⌉ samples per context (N rows)."""
    k = len(contexts)
    if k == 1:
        return SampleContexts(contexts.expand(n, *contexts.shape[1:]).clone(), None, title)
    per = max(1, -(-n // k))
    return SampleContexts(contexts.repeat_interleave(per, 0), per, title)


def default_contexts(decl: Optional[ContextDecl], n: int, test_contexts: Optional[Tensor]) -> Optional[SampleContexts]:
    """The contexts of a sample grid when none are given (see the module docstring); None for an
    unconditional spec."""
    if decl is None:
        return None
    if decl.kind == "label":
        return rows_of(torch.arange(decl.classes), n, " (one row per class)")
    if test_contexts is None or len(test_contexts) == 0:
        raise DataError(
            f"the run's spec declares {decl.describe()}: give --context-file (the run's data has no contexts to "
            "draw from)",
            filename="sample",
        )
    rows = max(1, min(len(test_contexts), round(math.sqrt(n))))
    return rows_of(test_contexts[:rows], n, f" (rows: contexts of test examples 0..{rows - 1})")


def sample_contexts(
    spec: Any,
    n: int,
    context: Optional[str] = None,
    context_file: Optional[str | os.PathLike] = None,
    test_contexts: Any = None,
) -> Optional[SampleContexts]:
    """The contexts ``flowdsl sample`` draws with (module docstring). ``test_contexts``: a
    callable giving the run's test contexts (loaded only when needed). Flags for a spec without a
    context, or both flags, are a :class:`DataError`."""
    decl = declared_context(spec)
    if decl is None:
        if context is not None or context_file is not None:
            flag = "--context" if context is not None else "--context-file"
            raise DataError(f"{flag}: the run's spec is unconditional (it declares no context)", filename=flag)
        return None
    if context is not None and context_file is not None:
        raise DataError("give --context or --context-file, not both", filename="--context")
    if context is not None:
        c = parse_context_value(context, decl)
        shown = context if decl.kind == "label" else f"({context})"
        return rows_of(c[None], n, f" context {shown}")
    if context_file is not None:
        cs = read_context_file(context_file, decl)
        return rows_of(cs, n, f" ({len(cs)} contexts of {Path(context_file).name})")
    tc = test_contexts() if callable(test_contexts) else test_contexts
    return default_contexts(decl, n, tc)
