"""The prior lowering registry: which function builds the module of each prior kind.

@prior_lowering("gaussian")
def lower_gaussian(args, shape, context=None) -> nn.Module: ...   # log_prob(z) -> (B,), sample(n, T)

A prior whose Args has ``conditional`` set true is lowered with ``context=`` the flow's
:class:`~flowdsl.runtime.context.EncodedContextInfo` (keyword); the others as ``fn(args, shape)``.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["prior_lowering", "unregister_prior_lowering", "get_prior_lowering", "lowered_priors"]

_LOWERINGS: dict[str, Callable[..., Any]] = {}


def prior_lowering(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn(args, shape)`` as the lowering of prior ``name``."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        prev = _LOWERINGS.get(name)
        if prev is not None and (prev.__module__, prev.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"prior {name!r} is lowered twice: {prev.__module__} and {fn.__module__}")
        _LOWERINGS[name] = fn
        return fn

    return register


def unregister_prior_lowering(name: str) -> None:
    """Remove the lowering of prior ``name`` (no error when there is none)."""
    _LOWERINGS.pop(name, None)


def get_prior_lowering(name: str) -> Callable[..., Any]:
    fn = _LOWERINGS.get(name)
    if fn is None:
        raise LookupError(f"prior {name!r} has no runtime module (no @prior_lowering({name!r}))")
    return fn


def lowered_priors() -> list[str]:
    return sorted(_LOWERINGS)
