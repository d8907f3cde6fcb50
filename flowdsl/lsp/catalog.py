"""What the language offers, read from the compiler's kind registry: names of layers, priors and
objectives, and the arguments of each (name, default, enumeration values).

The registry's ``Args`` pydantic models are the one source: a field's default is the language
default, a ``Literal[...]`` in its annotation (also inside ``Optional``/``Union``) lists the
enumeration values, ``bool`` offers ``true``/``false``. ``input image|vector(...)``,
``context label|vector|image(...)`` and ``train(...)`` are not kinds; their arguments come from the
same tables the ``expand`` pass uses.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from flowdsl.compiler.context import CONTEXT_KINDS as _CONTEXT_KINDS
from flowdsl.compiler.kinds import get_layer, get_objective, get_prior, layer_kinds, objective_kinds, prior_kinds
from flowdsl.errors import show_value

__all__ = [
    "ArgInfo",
    "args_of_model",
    "layer_args",
    "prior_args",
    "objective_args",
    "input_args",
    "context_args",
    "train_args",
    "layer_names",
    "prior_names",
    "objective_names",
    "LAYER_MATH",
    "STATEMENT_KEYWORDS",
    "INPUT_KINDS",
    "CONTEXT_KINDS",
    "DEQUANTIZE_MODES",
    "value_text",
]

#: statements that start with a keyword (inside a flow body; ``repeat`` also inside blocks)
STATEMENT_KEYWORDS = ("input", "context", "dequantize", "prior", "objective", "train", "repeat")
INPUT_KINDS = ("image", "vector")
CONTEXT_KINDS = tuple(_CONTEXT_KINDS)
DEQUANTIZE_MODES = ("uniform", "none")

#: one line of math per built-in layer kind (x the input, y the output; kinds registered later
#: fall back to their ``description``)
LAYER_MATH = {
    "actnorm": "y = s ⊙ x + b, per channel; log|det J| = H·W·Σ log|s|",
    "conv1x1": "y = W·x at every pixel, W ∈ R^{C×C} (lu: W = P·L·(U + diag s)); log|det J| = H·W·log|det W|",
    "conv": "y = W ⋆ x, an invertible k×k convolution; log|det J| from its triangular (emerging) or Fourier form",
    "butterfly": "y = B_depth ⋯ B_1·x, level ℓ mixes entries j and j + n/2^(ℓ+1) with a free 2×2 matrix per pair",
    "coupling": "y_a = x_a,  y_b = x_b ⊙ exp(s(x_a)) + t(x_a) (additive: y_b = x_b + t(x_a))",
    "permute": "y = x[π], a fixed permutation of the channels; log|det J| = 0",
    "squeeze": "(C, H, W) → (C·f², H/f, W/f), space to depth; log|det J| = 0",
    "split": "(C, …) → y = x[:C − ⌊C/2⌋] goes on, z = x[C − ⌊C/2⌋:] leaves as latents",
    "rg": "per level h: decimator ∘ disentangler on K×K patches of the 2^h-lattice (RG-Flow); shape unchanged",
}

_INPUT_ARGS = {
    "image": (("channels", None), ("height", None), ("width", None), ("levels", 256)),
    "vector": (("dim", None),),
}


@dataclass(frozen=True)
class ArgInfo:
    """One argument: its name, default as written in a spec (None: required) and the values an
    enumeration takes (empty when it is not one)."""

    name: str
    default: str | None
    choices: tuple[str, ...] = ()

    def signature(self) -> str:
        return self.name if self.default is None else f"{self.name}={self.default}"


def value_text(v: Any) -> str:
    """A Python value as it is written in a spec (``true``, ``lu``, ``[1, 2]``, ``resnet(hidden=64)``)."""
    if isinstance(v, dict) and "call" in v:
        inner = ", ".join(f"{k}={value_text(x)}" for k, x in v.get("args", {}).items())
        return f"{v['call']}({inner})"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    return show_value(v)


def _choices(annotation: Any) -> tuple[str, ...]:
    out: list[str] = []

    def walk(t: Any) -> None:
        if t is bool:
            out.extend(("true", "false"))
        elif typing.get_origin(t) is typing.Literal:
            out.extend(str(a) for a in typing.get_args(t))
        else:
            for a in typing.get_args(t):
                walk(a)

    walk(annotation)
    return tuple(dict.fromkeys(out))


def args_of_model(model: type) -> list[ArgInfo]:
    """The arguments of a pydantic ``Args`` model, in declaration order."""
    out = []
    for name, f in model.model_fields.items():
        choices = _choices(f.annotation)
        if f.is_required():
            default = None
        else:
            d = f.get_default(call_default_factory=True)
            # None: an enumeration resolved from the input (coupling's net), else not set
            default = ("auto" if choices else "(unset)") if d is None else value_text(d)
        out.append(ArgInfo(name, default, choices))
    return out


def layer_args(name: str) -> list[ArgInfo] | None:
    kind = get_layer(name)
    return None if kind is None else args_of_model(kind.Args)


def prior_args(name: str) -> list[ArgInfo] | None:
    kind = get_prior(name)
    return None if kind is None else args_of_model(kind.Args)


def objective_args(name: str) -> list[ArgInfo] | None:
    kind = get_objective(name)
    return None if kind is None else args_of_model(kind.Args)


def input_args(kind: str) -> list[ArgInfo] | None:
    if kind not in _INPUT_ARGS:
        return None
    return [ArgInfo(n, None if d is None else str(d)) for n, d in _INPUT_ARGS[kind]]


def context_args(kind: str) -> list[ArgInfo] | None:
    """The arguments of ``context KIND(...)`` (all required)."""
    if kind not in _CONTEXT_KINDS:
        return None
    return [ArgInfo(n, None) for n in _CONTEXT_KINDS[kind]]


def train_args() -> list[ArgInfo]:
    from flowdsl.schema import TrainSpec

    return [a for a in args_of_model(TrainSpec) if a.name not in ("span", "arg_spans")]


def layer_names() -> list[str]:
    return sorted(layer_kinds())


def prior_names() -> list[str]:
    return sorted(prior_kinds())


def objective_names() -> list[str]:
    return sorted(objective_kinds())
