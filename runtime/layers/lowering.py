"""The layer lowering registry: which function builds the PyTorch module of each layer kind.

    @lowering("coupling")
    def lower_coupling(args, shape, bodies=None) -> Bijector: ...

``args`` is the kind's validated Args model, ``shape`` the input shape (without batch) and
``bodies`` (composite kinds only) maps body labels to their built ``Chain``. The compiler's kinds
(``flowdsl.compiler.kinds``) know nothing of these functions; the runtime looks them up by kind
name when it lowers a checked graph.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["lowering", "unregister_lowering", "layer_lowering", "lowered_kinds"]

_LOWERINGS: dict[str, Callable[..., Any]] = {}


def lowering(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn(args, shape, bodies=None)`` as the lowering of layer ``kind``."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        prev = _LOWERINGS.get(kind)
        if prev is not None and (prev.__module__, prev.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"layer kind {kind!r} is lowered twice: {prev.__module__} and {fn.__module__}")
        _LOWERINGS[kind] = fn
        return fn

    return register


def unregister_lowering(kind: str) -> None:
    """Remove the lowering of ``kind`` (no error when there is none)."""
    _LOWERINGS.pop(kind, None)


def layer_lowering(kind: str) -> Callable[..., Any]:
    """The lowering of ``kind`` (import ``flowdsl.runtime.layers`` first: it registers the
    built-in ones); a kind without one is an internal error (a test checks the built-ins)."""
    fn = _LOWERINGS.get(kind)
    if fn is None:
        raise LookupError(f"layer kind {kind!r} has no runtime module (no @lowering({kind!r}))")
    return fn


def lowered_kinds() -> list[str]:
    return sorted(_LOWERINGS)
