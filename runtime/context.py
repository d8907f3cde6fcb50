"""The flow's context at run time: validation, the model-level encoder, and what layers read.

A conditional flow (``context label(classes=K)``, ``context vector(dim=D)`` or
``context image(channels=C, height=H, width=W)`` in the file) takes one context per example. The
model validates it (:func:`check_context`), encodes it ONCE per call with its
:class:`ContextEncoder` and hands every layer and prior that uses it a :class:`ContextValue`:

    raw        the user's context, batched and on the input's device:
               label (B,) long, vector (B, D), image (B, C, Hc, Wc) in the input's dtype
    embedding  the encoder's output, E = CONTEXT_EMBED features (``flowdsl.compiler.context``):
               label   nn.Embedding(K, E)                                 -> (B, E)
               vector  Linear(D→E), SiLU, Linear(E→E)                     -> (B, E)
               image   Conv 3×3 (C→E, pad 1), SiLU, Conv 1×1 (E→E)        -> (B, E, Hc, Wc)

A conditioner at input shape ``shape`` concatenates :func:`context_features` to its input:

    vector layer (D,)          (B, E)         image embeddings average-pooled over (Hc, Wc)
    image layer (C, h, w)      (B, E, h, w)   vector embeddings broadcast over (h, w); image
                                              embeddings average-pooled (Hc = k·h) or
                                              nearest-upsampled (h = k·Hc), per axis

Pooling and upsampling are reshapes, ``mean`` and ``expand`` (no interpolation op), so they
compile without graph breaks and export to ONNX with a dynamic batch.

Validation (:func:`check_context`) raises :class:`flowdsl.errors.ContextError` naming the
declared context: a missing or superfluous context, a wrong dtype (labels must be integers,
vectors and images floating point), a wrong shape, or a label outside 0…K−1. A context without
the batch dimension (one example) or with batch 1 is broadcast to the batch. The label range
check reads the labels on the host (one synchronisation), so it runs only in eager mode: under
``torch.compile``, ``torch.jit`` tracing or ONNX export it is skipped, and an out-of-range label
there is an index error of the embedding lookup (the compiled graph has no host read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from flowdsl.compiler.context import CONTEXT_EMBED
from flowdsl.errors import ContextError

__all__ = [
    "CONTEXT_EMBED",
    "ContextValue",
    "EncodedContextInfo",
    "ContextEncoder",
    "context_features",
    "context_vector",
    "check_context",
    "encode",
    "broadcast",
    "expand_context",
    "describe_context",
    "is_tracing",
]


class ContextValue(NamedTuple):
    """What a layer that uses the context receives: the raw context and its embedding (see the
    module docstring for the shapes)."""

    raw: Tensor
    embedding: Tensor


@dataclass(frozen=True)
class EncodedContextInfo:
    """What a lowering needs to know about the encoded context (static, no tensors).

    ``kind`` "label" | "vector" | "image"; ``width`` E; ``spatial`` (Hc, Wc) of the image embedding
    (None otherwise); ``classes`` K for labels; ``shape`` the raw per-example shape
    (label (), vector (D,), image (C, Hc, Wc)); ``declared`` the declaration as written in a file;
    ``filename`` and ``span`` where it is written (the location of a :class:`ContextError`).
    """

    kind: str
    width: int = CONTEXT_EMBED
    spatial: tuple[int, int] | None = None
    classes: int | None = None
    shape: tuple[int, ...] = ()
    declared: str = ""
    filename: str = field(default="<string>", compare=False)
    span: Any = field(default=None, compare=False)

    @classmethod
    def from_spec(cls, spec: Any, width: int = CONTEXT_EMBED, filename: str = "<string>") -> "EncodedContextInfo":
        """From a ``ContextSpec`` (``FlowSpec.context``) of the file ``filename``."""
        kind, where = spec.kind, {"filename": filename, "span": getattr(spec, "span", None)}
        if kind == "label":
            return cls("label", width, None, int(spec.classes), (), describe_context(spec), **where)
        if kind == "vector":
            return cls("vector", width, None, None, (int(spec.dim),), describe_context(spec), **where)
        shape = (int(spec.channels), int(spec.height), int(spec.width))
        return cls("image", width, shape[1:], None, shape, describe_context(spec), **where)


def describe_context(spec: Any) -> str:
    """``context label(classes=10)`` etc.: the declaration as a file writes it."""
    if spec.kind == "label":
        return f"context label(classes={spec.classes})"
    if spec.kind == "vector":
        return f"context vector(dim={spec.dim})"
    return f"context image(channels={spec.channels}, height={spec.height}, width={spec.width})"


class ContextEncoder(nn.Module):
    """The model-level encoder raw -> embedding (one per model; see the module docstring).

    Parameter count = ``flowdsl.compiler.context.encoder_param_count``."""

    def __init__(self, info: EncodedContextInfo) -> None:
        super().__init__()
        self.kind = info.kind
        E = info.width
        if info.kind == "label":
            self.net: nn.Module = nn.Embedding(int(info.classes), E)
        elif info.kind == "vector":
            self.net = nn.Sequential(nn.Linear(info.shape[0], E), nn.SiLU(), nn.Linear(E, E))
        else:
            self.net = nn.Sequential(nn.Conv2d(info.shape[0], E, 3, padding=1), nn.SiLU(), nn.Conv2d(E, E, 1))

    def forward(self, raw: Tensor) -> Tensor:
        return self.net(raw)


# -- what a conditioner reads ----------------------------------------------------------------
def context_vector(ctx: ContextValue) -> Tensor:
    """(B, E): the embedding of a label/vector context, or an image embedding averaged over (Hc, Wc)."""
    emb = ctx.embedding
    return emb if emb.dim() == 2 else emb.mean(dim=(2, 3))


def _resize_axis(t: Tensor, axis: int, size: int) -> Tensor:
    """Average-pool (size divides t's extent) or nearest-upsample (t's extent divides size) along
    ``axis`` (2 or 3) of a (B, E, H, W) tensor; reshapes, ``mean`` and ``expand`` only."""
    n = t.shape[axis]
    if n == size:
        return t
    B, E, H, W = -1, t.shape[1], t.shape[2], t.shape[3]
    if n % size == 0:
        k = n // size
        if axis == 2:
            return t.reshape(B, E, size, k, W).mean(dim=3)
        return t.reshape(B, E, H, size, k).mean(dim=4)
    if size % n == 0:
        k = size // n
        if axis == 2:
            return t.unsqueeze(3).expand(t.shape[0], E, H, k, W).reshape(B, E, size, W)
        return t.unsqueeze(4).expand(t.shape[0], E, H, W, k).reshape(B, E, H, size)
    raise ValueError(f"context size {n} and layer size {size} have no integer ratio")  # the checker rejects it


def context_features(ctx: ContextValue, shape: tuple[int, ...]) -> Tensor:
    """What a conditioner at input shape ``shape`` (without batch) concatenates to its input:
    (B, E) for a vector layer (D,), (B, E, h, w) for an image layer (C, h, w)."""
    if len(shape) == 1:
        return context_vector(ctx)
    h, w = int(shape[-2]), int(shape[-1])
    emb = ctx.embedding
    if emb.dim() == 2:
        return emb[:, :, None, None].expand(emb.shape[0], emb.shape[1], h, w)
    return _resize_axis(_resize_axis(emb, 2, h), 3, w)


def expand_context(ctx: ContextValue, repeats: int) -> ContextValue:
    """Each example's context repeated ``repeats`` times in a row (example b -> rows b·r … b·r + r − 1),
    e.g. once per patch of an ``rg`` layer."""

    def rep(t: Tensor) -> Tensor:
        return t.unsqueeze(1).expand(t.shape[0], repeats, *t.shape[1:]).reshape(-1, *t.shape[1:])

    return ContextValue(rep(ctx.raw), rep(ctx.embedding))


# -- validation ------------------------------------------------------------------------------
def is_tracing() -> bool:
    """True under torch.compile / torch.export, torch.jit tracing or ONNX export (no host reads)."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def _expected(info: EncodedContextInfo) -> str:
    if info.kind == "label":
        return "an integer (long) tensor of class indices of shape (B,), or one class as an int"
    if info.kind == "vector":
        return f"a floating-point tensor of shape (B, {info.shape[0]}) or ({info.shape[0]},)"
    c, h, w = info.shape
    return f"a floating-point tensor of shape (B, {c}, {h}, {w}) or ({c}, {h}, {w})"


def _fail(info: EncodedContextInfo, problem: str) -> ContextError:
    return ContextError(
        f"this flow declares `{info.declared}`: {problem}; expected {_expected(info)}",
        filename=info.filename,
        span=info.span,
    )


def _as_tensor(info: EncodedContextInfo, context: Any) -> Tensor:
    if isinstance(context, Tensor):
        return context
    if isinstance(context, bool):
        raise _fail(info, "got a bool")
    try:
        return torch.as_tensor(context)
    except (TypeError, ValueError, RuntimeError) as e:
        raise _fail(info, f"got a {type(context).__name__} that is not a tensor ({e})") from None


def _dtype_name(t: Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def check_context(
    info: EncodedContextInfo | None, context: Any, batch: int, device: torch.device, dtype: torch.dtype
) -> Tensor | None:
    """Validate ``context`` against the declared context ``info`` (None: the flow has none) for a
    batch of ``batch`` examples. Returns the raw context with a batch dimension of 1 or ``batch``
    (not yet broadcast), on ``device``; floating contexts in ``dtype``, labels as long. Raises
    :class:`ContextError` (see the module docstring)."""
    if info is None:
        if context is not None:
            raise ContextError(
                "this flow declares no context, but a context was given; remove the context argument "
                "(or declare one in the file, e.g. `context label(classes=10)` after the input)"
            )
        return None
    if context is None:
        raise _fail(info, "no context was given (pass context=...)")
    t = _as_tensor(info, context)
    per = tuple(info.shape)
    if info.kind == "label":
        if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
            raise _fail(info, f"got a {_dtype_name(t)} tensor (class indices must be integers)")
    elif not t.is_floating_point():
        raise _fail(info, f"got a {_dtype_name(t)} tensor")
    shape = tuple(t.shape)
    if shape == per:
        t = t.unsqueeze(0)
    elif len(shape) != len(per) + 1 or shape[1:] != per:
        raise _fail(info, f"got shape {shape}")
    if t.shape[0] not in (1, batch):
        raise _fail(info, f"got a batch of {t.shape[0]} contexts for {batch} examples (give 1 or {batch})")
    t = t.to(device=device, dtype=torch.long if info.kind == "label" else dtype)
    if info.kind == "label" and not is_tracing():
        # one host read (eager mode only; see the module docstring)
        bad = (t < 0) | (t >= int(info.classes))
        if bool(bad.any()):
            first = int(t[bad][0])
            raise _fail(info, f"got label {first}, outside 0…{int(info.classes) - 1}")
    return t


def broadcast(t: Tensor, batch: int) -> Tensor:
    """A (1, ...) or (batch, ...) tensor expanded to (batch, ...)."""
    return t if t.shape[0] == batch else t.expand(batch, *t.shape[1:])


def encode(
    info: EncodedContextInfo | None,
    encoder: nn.Module | None,
    context: Any,
    batch: int,
    device: torch.device,
    dtype: torch.dtype,
) -> ContextValue | None:
    """Validate and encode: the :class:`ContextValue` for ``batch`` examples (None without a
    context). A batch-1 context is encoded once and broadcast."""
    raw = check_context(info, context, batch, device, dtype)
    if raw is None:
        return None
    emb = encoder(raw)
    return ContextValue(broadcast(raw, batch), broadcast(emb, batch))
