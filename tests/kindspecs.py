"""Tiny spec snippets for every registered layer kind, generated from the kind registry.

A new kind is covered without touching the tests: for each kind in
``flowdsl.compiler.kinds.layer_kinds()`` the snippets are its default call and one call per
other value of every enumeration argument (``Literal[...]`` fields of its ``Args``, e.g.
``conv1x1(param=qr)``, ``conv(kind=periodic)``, ``butterfly(over=height)``), each on a tiny
image input (C, H, W) = (2, 4, 4) and a vector input (D,) = (4,). Size arguments are shrunk
(``SMALL``); composite kinds get every body filled with ``BODY``. A snippet is kept when its
unconditional spec passes ``check`` (a kind that rejects vectors, or an enumeration value that
needs another argument, simply has fewer snippets); :func:`layer_cases` raises if a kind ends
up with none, so a kind the generator cannot express is reported by name.

The ``context`` argument (conditional flows) is never written: after ``check`` it defaults to
"the file declares a context".

Registered by name in tests/conftest.py (like ``flowtest``): ``import kindspecs``.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal

import flowdsl
from flowdsl.compiler.kinds import layer_kinds

__all__ = ["LayerCase", "layer_cases", "spec_text", "IMAGE", "VECTOR", "SMALL", "BODY"]

IMAGE = (2, 4, 4)
VECTOR = (4,)
#: size arguments shrunk so that every model is tiny (the kinds' defaults are for real data)
SMALL = {"hidden": 8}
#: the layers written into every body of a composite kind (``rg``'s disentangler/decimator)
BODY = (("actnorm", {}), ("coupling", {"net": "mlp", "mask": "checkerboard", "hidden": 8}))

SKIP_FIELDS = {"context"}


@dataclass(frozen=True)
class LayerCase:
    kind: str
    layer: str  # the layer statement, e.g. "conv(kind=periodic)"
    shape: tuple[int, ...]  # the input shape

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @property
    def input(self) -> str:
        if self.is_image:
            c, h, w = self.shape
            return f"input image(channels={c}, height={h}, width={w})"
        return f"input vector(dim={self.shape[0]})"

    @property
    def id(self) -> str:
        where = "x".join(map(str, self.shape))
        return f"{self.layer}@{where}"


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return repr(value)


def _literals(annotation: Any) -> list[Any]:
    """The values of every ``Literal`` inside ``annotation`` (through Optional/Union)."""
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    out: list[Any] = []
    for a in typing.get_args(annotation):
        out.extend(_literals(a))
    return out


def _variants(kind_cls: type) -> list[dict[str, Any]]:
    """{}: the defaults; then one dict per non-default enumeration value of each field."""
    out: list[dict[str, Any]] = [{}]
    for name, field in kind_cls.Args.model_fields.items():
        if name in SKIP_FIELDS:
            continue
        for value in _literals(field.annotation):
            if value != field.default:
                out.append({name: value})
    return out


def _call(kind_cls: type, args: dict[str, Any]) -> str:
    return kind_cls.name + (f"({', '.join(f'{k}={_fmt(v)}' for k, v in args.items())})" if args else "")


def _layer_text(kind_cls: type, args: dict[str, Any]) -> str:
    fields = kind_cls.Args.model_fields
    full = {k: v for k, v in SMALL.items() if k in fields}
    full.update(args)
    call = _call(kind_cls, full)
    if kind_cls.bodies:
        body = " ".join(_call(layer_kinds()[name], body_args) for name, body_args in BODY)
        call += " { " + " ".join(f"{b} {{ {body} }}" for b in kind_cls.bodies) + " }"
    return call


def spec_text(case: LayerCase, context: str | None = None, prior: str | None = None) -> str:
    """The flow file of a case: input, context (if any), the layer, prior (if any)."""
    lines = [case.input]
    if context:
        lines.append(context)
    lines.append(case.layer)
    if prior:
        lines.append(prior)
    return "flow t {\n  " + "\n  ".join(lines) + "\n}\n"


def _checks(text: str) -> bool:
    try:
        flowdsl.parse(text)
    except flowdsl.FlowDSLError:
        return False
    return True


_CACHE: dict[str, list[LayerCase]] = {}


def layer_cases(kinds: list[str] | None = None) -> list[LayerCase]:
    """Every (kind, variant, input) snippet whose unconditional spec checks, in kind order."""
    names = sorted(layer_kinds()) if kinds is None else kinds
    out: list[LayerCase] = []
    for name in names:
        if name not in _CACHE:
            kind_cls = layer_kinds()[name]
            cases = []
            for args in _variants(kind_cls):
                layer = _layer_text(kind_cls, args)
                for shape in (IMAGE, VECTOR):
                    case = LayerCase(name, layer, shape)
                    if _checks(spec_text(case)):
                        cases.append(case)
            if not cases:
                raise AssertionError(f"layer kind {name!r}: no generated snippet passes check (see tests/kindspecs.py)")
            _CACHE[name] = cases
        out.extend(_CACHE[name])
    return out
