"""Contexts of conditional specs: what a data set gives a spec that declares ``context``.

A spec with ``context label(classes=K)``, ``context vector(dim=D)`` or ``context image(channels=C,
height=H, width=W)`` trains on pairs (x, c). :func:`attach_context` (called by
:func:`flowdsl.runtime.data.load_for_spec`) turns what a source holds into the checked tensor the
model takes, or raises a :class:`~flowdsl.errors.DataError` naming the file and what the spec
declares:

* **label**: int64 (N,) in 0…K−1, from the source's ``context`` array when it is one integer per
  example, else its labels (digits, MNIST/IDX label files, class subfolders of an image folder,
  an ``.npz``'s ``y``/``labels``/``y_train``/``y_test``);
* **vector**: float32 (N, D), from the source's context array (``.npz``: ``context``, else ``y`` or
  ``labels``; (N,) is taken as (N, 1));
* **image**: float32 (N, C, H, W), from the source's context array ((N, H, W) when C = 1 and
  channels-last (N, H, W, C) are accepted), or **derived** from the images themselves with the
  data option ``+lowres`` (below).

Contexts are given to the model as they are (no dequantisation, no scaling). Unconditional specs
never look at contexts: their data loads exactly as before.

**Derived low-resolution context** (``--data NAME+lowres``, ``train(data="digits+lowres")``): for
a ``context image(channels=C, height=h, width=w)`` whose size divides the input's (C, H, W), the
context of an image with raw values k is the mean of k over each (H/h)×(W/w) block, on the
model's scale of bin centres: c = (mean k + ½) / levels. It is a fixed function of the image (no
noise), so the low-resolution image a user gives at sampling time is on the same scale; the cINN
spec ``specs/cinn_digits.flow`` uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np
import torch

from flowdsl.errors import DataError

__all__ = [
    "ContextDecl",
    "ContextProblem",
    "CONTEXT_OPTIONS",
    "declared_context",
    "split_data_option",
    "attach_context",
    "lowres_context",
    "check_context_array",
]

#: the data options a name may end with (``digits+lowres``)
CONTEXT_OPTIONS = ("lowres",)


@dataclass(frozen=True)
class ContextDecl:
    """What a spec declares: ``kind`` (label, vector, image), ``classes`` (labels) and the
    ``shape`` of one context (label ``()``, vector ``(D,)``, image ``(C, H, W)``)."""

    kind: str
    classes: Optional[int]
    shape: tuple[int, ...]

    def describe(self) -> str:
        """The declaration as the spec writes it: ``context label(classes=10)``."""
        if self.kind == "label":
            return f"context label(classes={self.classes})"
        if self.kind == "vector":
            return f"context vector(dim={self.shape[0]})"
        c, h, w = self.shape
        return f"context image(channels={c}, height={h}, width={w})"


@dataclass(frozen=True)
class ContextProblem:
    """Why a source cannot give a context (reported only when a spec asks for one)."""

    message: str


def declared_context(spec: Any) -> Optional[ContextDecl]:
    """The spec's context (``FlowSpec.context``) as a :class:`ContextDecl`, or None."""
    ctx = getattr(spec, "context", None)
    if ctx is None:
        return None
    kind = str(ctx.kind)
    if kind == "label":
        return ContextDecl("label", int(ctx.classes), ())
    if kind == "vector":
        return ContextDecl("vector", None, (int(ctx.dim),))
    if kind == "image":
        return ContextDecl("image", None, (int(ctx.channels), int(ctx.height), int(ctx.width)))
    raise DataError(f"unknown context kind {kind!r}", filename=str(getattr(spec, "filename", "<spec>")))


def split_data_option(name: str) -> tuple[str, Optional[str]]:
    """``"digits+lowres"`` → ``("digits", "lowres")``; names without a known option → ``(name, None)``."""
    base, sep, option = str(name).rpartition("+")
    if sep and base and option.lower() in CONTEXT_OPTIONS:
        return base, option.lower()
    return str(name), None


def check_context_array(name: str, a: Any, n: int, what: str = "context") -> np.ndarray:
    """``a`` as a numeric numpy array with ``n`` rows, finite; :class:`DataError` otherwise."""
    arr = np.asarray(a)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"the {what} array of data {name!r} is not numeric (type {arr.dtype})", filename=name)
    if np.iscomplexobj(arr):
        raise DataError(f"the {what} array of data {name!r} holds complex numbers", filename=name)
    if arr.ndim == 0 or arr.shape[0] != n:
        rows = "a scalar" if arr.ndim == 0 else f"{arr.shape[0]:,} rows (shape {tuple(arr.shape)})"
        raise DataError(f"the {what} array of data {name!r} has {rows} for {n:,} examples", filename=name)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise DataError(
            f"the {what} array of data {name!r} holds NaN or infinite values (the first at example {int(bad[0])})",
            filename=name,
        )
    return arr


def _labels(ds: Any, decl: ContextDecl, name: str) -> torch.Tensor:
    raw = ds.context
    n = len(ds)
    arr = None
    if isinstance(raw, np.ndarray) or isinstance(raw, torch.Tensor):
        cand = np.asarray(raw.numpy() if isinstance(raw, torch.Tensor) else raw)
        if cand.ndim == 1 or (cand.ndim == 2 and cand.shape[1] == 1):
            arr = check_context_array(name, cand.reshape(len(cand)), n)
    if arr is None and ds.labels is not None:
        arr = check_context_array(name, ds.labels.numpy(), n, "labels")
    if arr is None:
        why = raw.message if isinstance(raw, ContextProblem) else f"data {name!r} has no labels"
        raise DataError(
            f"{why}, but the spec declares {decl.describe()}: give one class per example (digits, MNIST "
            "label files, class subfolders of an image folder, or a 'y'/'labels'/'context' array next to 'x')",
            filename=name,
        )
    if not np.issubdtype(arr.dtype, np.integer) and not np.all(arr == np.round(arr)):
        i = int(np.flatnonzero(arr != np.round(arr))[0])
        raise DataError(
            f"the labels of data {name!r} are not integers (example {i}: {arr[i]!r}); {decl.describe()} takes "
            f"classes 0..{decl.classes - 1}",
            filename=name,
        )
    k = decl.classes
    bad = np.flatnonzero((arr < 0) | (arr >= k))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"label {arr[i]:g} of example {i} of data {name!r} is outside 0..{k - 1} ({bad.size:,} such examples; "
            f"labels range over {arr.min():g}..{arr.max():g}), but the spec declares {decl.describe()}",
            filename=name,
        )
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))


def _arranged(name: str, arr: np.ndarray, decl: ContextDecl) -> np.ndarray:
    """A context array brought to (N, *decl.shape) (vector (N,) for D = 1; images (N, H, W) for
    C = 1 or channels-last), or a :class:`DataError` naming both shapes."""
    want = decl.shape
    got = tuple(arr.shape[1:])
    if got == want:
        return arr
    if decl.kind == "vector" and want == (1,) and got == ():
        return arr[:, None]
    if decl.kind == "image":
        c, h, w = want
        if c == 1 and got == (h, w):
            return arr[:, None]
        if got == (h, w, c):
            return np.moveaxis(arr, -1, 1)
    shown = "×".join(map(str, got)) or "one number"
    raise DataError(
        f"the context array of data {name!r} has contexts of shape {shown} (array {tuple(arr.shape)}) but the spec "
        f"declares {decl.describe()} (shape {'×'.join(map(str, want))})",
        filename=name,
    )


def lowres_context(ds: Any, decl: ContextDecl, name: str) -> np.ndarray:
    """The derived low-resolution context (N, C, h, w) of image data ``ds`` (module docstring)."""
    if decl.kind != "image":
        raise DataError(
            f"the data option '+lowres' derives a context image, but the spec declares {decl.describe()}",
            filename=name,
        )
    if ds.levels is None or len(ds.shape) != 3:
        raise DataError("the data option '+lowres' needs image data (C×H×W with levels)", filename=name)
    c, h, w = ds.shape
    cc, hc, wc = decl.shape
    if cc != c or h % hc or w % wc:
        raise DataError(
            f"the data option '+lowres' averages blocks of the {c}×{h}×{w} images, but the spec's "
            f"{decl.describe()} has {'other channels' if cc != c else 'a height or width that does not divide theirs'}",
            filename=name,
        )
    fh, fw = h // hc, w // wc
    x = ds.x.numpy().astype(np.float64).reshape(len(ds), c, hc, fh, wc, fw)
    return ((x.mean(axis=(3, 5)) + 0.5) / ds.levels).astype(np.float32)


def attach_context(ds: Any, decl: Optional[ContextDecl], name: str, option: Optional[str] = None) -> Any:
    """``ds`` with ``context`` set to the checked tensor for ``decl`` (None: unconditional, the
    context dropped). ``option``: a data option of :data:`CONTEXT_OPTIONS` (``lowres``)."""
    if decl is None:
        if option is not None:
            raise DataError(f"the data option '+{option}' derives a context, but the spec declares none", filename=name)
        return replace(ds, context=None)
    n = len(ds)
    if option == "lowres":
        ctx = torch.from_numpy(lowres_context(ds, decl, name))
        note = (
            f"context: {decl.describe()} derived from the images (block means, (mean value + 1/2) / levels; "
            "data option +lowres)"
        )
    elif decl.kind == "label":
        ctx = _labels(ds, decl, name)
        counts = torch.bincount(ctx, minlength=decl.classes)
        note = f"context: {decl.describe()} from the data's labels ({int((counts > 0).sum())} classes present)"
    else:
        raw = ds.context
        if isinstance(raw, ContextProblem):
            raise DataError(f"{raw.message}, but the spec declares {decl.describe()}", filename=name)
        if raw is None:
            hint = (
                " (its labels are classes: declare context label(classes=K), or give a context array)"
                if ds.labels is not None
                else ""
            )
            extra = "; or derive one with the data option +lowres (--data NAME+lowres)" if decl.kind == "image" else ""
            raise DataError(
                f"data {name!r} holds no context array{hint}, but the spec declares {decl.describe()}: give a "
                f"'context' array next to 'x' (or context_train/context_test){extra}",
                filename=name,
            )
        arr = raw.numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
        arr = _arranged(name, check_context_array(name, arr, n), decl)
        big = float(np.abs(arr).max()) if arr.size else 0.0
        if big > float(np.finfo(np.float32).max):
            raise DataError(f"the context array of data {name!r} holds values beyond float32's range", filename=name)
        ctx = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        note = f"context: {decl.describe()} from the data's context array"
    notes = list(ds.notes)
    if note not in notes:
        notes.append(note)
    return replace(ds, context=ctx, notes=notes)
