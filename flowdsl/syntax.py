"""Syntax nodes of a spec file (frozen dataclasses, each with a span) and the lark tree walk.

The walk (:class:`SyntaxBuilder`) only builds nodes; it validates nothing, so no exception is
ever wrapped in lark's ``VisitError``. Validation happens later, in the compiler passes
(``flowdsl.compiler.passes.expand`` first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from lark import Token, Transformer, v_args

from flowdsl.errors import Span

__all__ = [
    "Literal",
    "Name",
    "Ref",
    "ListValue",
    "CallValue",
    "Value",
    "Arg",
    "Param",
    "Call",
    "Repeat",
    "BodyPart",
    "Input",
    "ContextStmt",
    "Dequantize",
    "PriorStmt",
    "ObjectiveStmt",
    "TrainStmt",
    "Stmt",
    "BlockDef",
    "FlowDef",
    "SpecFile",
    "SyntaxBuilder",
    "BigNumber",
    "span_of",
]


def span_of(meta_or_token: Any) -> Span:
    """The span of a lark ``Meta`` or ``Token``."""
    m = meta_or_token
    if getattr(m, "empty", False):
        return Span()
    line = getattr(m, "line", None)
    if line is None:
        return Span()
    return Span(line, m.column, getattr(m, "end_line", line) or line, getattr(m, "end_column", m.column) or m.column)


@dataclass(frozen=True)
class Literal:
    """An int, float, bool or string value."""

    value: Any
    span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class Name:
    """A bare identifier used as an enumeration value (``lu``, ``emerging``, ``auto``)."""

    name: str
    span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class Ref:
    """A block-parameter reference ``$name``."""

    name: str
    span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class ListValue:
    items: tuple["Value", ...]
    span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class CallValue:
    """A nested call used as a value: ``convnet(hidden=64, depth=3)``."""

    name: str
    args: tuple["Arg", ...]
    span: Span = field(default_factory=Span, compare=False)


Value = Union[Literal, Name, Ref, ListValue, CallValue]


@dataclass(frozen=True)
class Arg:
    """``name=value``; ``name`` is None for a positional argument (rejected by the checker)."""

    name: str | None
    value: Value
    span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class Param:
    """A block parameter with an optional default."""

    name: str
    default: Value | None
    span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class Call:
    """A layer statement or a block call: ``coupling(hidden=64)``, ``actnorm``, ``step()``; a
    composite layer also has ``parts`` (its body: ``rg(kernel=4) { decimator { ... } }``), None when
    no body is written. ``span`` is the name's."""

    name: str
    args: tuple[Arg, ...]
    span: Span = field(default_factory=Span, compare=False)
    has_parens: bool = False
    parts: tuple[BodyPart, ...] | None = None


@dataclass(frozen=True)
class Repeat:
    count: Value
    body: tuple["Stmt", ...]
    span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class BodyPart:
    """One named part of a composite layer's body: ``decimator { ... }``; ``name_span`` is the
    part's name, ``span`` the whole part."""

    name: str
    body: tuple["Stmt", ...]
    span: Span = field(default_factory=Span, compare=False)
    name_span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class Input:
    kind: str
    args: tuple[Arg, ...]
    span: Span = field(default_factory=Span, compare=False)
    kind_span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class ContextStmt:
    """``context label(classes=K)`` / ``context vector(dim=D)`` / ``context image(channels, height,
    width)``: the flow's context; ``span`` is the whole statement's, ``kind_span`` the kind's."""

    kind: str
    args: tuple[Arg, ...]
    span: Span = field(default_factory=Span, compare=False)
    kind_span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class Dequantize:
    mode: str
    span: Span = field(default_factory=Span, compare=False)
    mode_span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class PriorStmt:
    name: str
    args: tuple[Arg, ...]
    span: Span = field(default_factory=Span, compare=False)
    name_span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class ObjectiveStmt:
    name: str
    args: tuple[Arg, ...]
    span: Span = field(default_factory=Span, compare=False)
    name_span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class TrainStmt:
    args: tuple[Arg, ...]
    span: Span = field(default_factory=Span, compare=False)


Stmt = Union[Call, Repeat, Input, ContextStmt, Dequantize, PriorStmt, ObjectiveStmt, TrainStmt]


@dataclass(frozen=True)
class BlockDef:
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span = field(default_factory=Span, compare=False)
    name_span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class FlowDef:
    name: str
    body: tuple[Stmt, ...]
    span: Span = field(default_factory=Span, compare=False)
    name_span: Span = field(default_factory=Span, compare=False)


@dataclass(frozen=True)
class SpecFile:
    blocks: tuple[BlockDef, ...]
    flow: FlowDef


class BigNumber(str):
    """A numeric literal too long to convert (rejected by the checker with its location)."""


def _parse_number(text: str) -> int | float | BigNumber:
    if len(text) > 40:
        return BigNumber(text)
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)


@v_args(meta=True)
class SyntaxBuilder(Transformer):
    """lark tree -> syntax dataclasses. Builds only; never validates."""

    def __init__(self) -> None:
        # no method takes a token: skip lark's failed lookup (an AttributeError) for every token
        super().__init__(visit_tokens=False)
        # lark makes a new v_args wrapper (functools.update_wrapper) on every lookup of a method,
        # once per tree node; look each one up once per parse instead
        for name in _RULE_METHODS:
            setattr(self, name, getattr(self, name))

    def start(self, meta, children):
        *blocks, flow = children
        return SpecFile(tuple(blocks), flow)

    def block_def(self, meta, children):
        name = children[0]
        rest = children[1:]
        params: tuple[Param, ...] = ()
        if rest and isinstance(rest[0], tuple) and (not rest[0] or isinstance(rest[0][0], Param)):
            params = rest[0]
            rest = rest[1:]
        return BlockDef(str(name), params, tuple(rest), span_of(meta), span_of(name))

    def param_list(self, meta, children):
        return tuple(c for c in children if c is not None)

    def param(self, meta, children):
        name = children[0]
        default = children[1] if len(children) > 1 else None
        return Param(str(name), default, span_of(meta))

    def flow_def(self, meta, children):
        name = children[0]
        return FlowDef(str(name), tuple(children[1:]), span_of(meta), span_of(name))

    def input_stmt(self, meta, children):
        kind = children[0]
        args = children[1] if len(children) > 1 else ()
        return Input(str(kind), args, span_of(meta), span_of(kind))

    def context_stmt(self, meta, children):
        kind = children[0]
        args = children[1] if len(children) > 1 else ()
        return ContextStmt(str(kind), args, span_of(meta), span_of(kind))

    def dequant_stmt(self, meta, children):
        return Dequantize(str(children[0]), span_of(meta), span_of(children[0]))

    def prior_stmt(self, meta, children):
        name = children[0]
        args = children[1] if len(children) > 1 else ()
        return PriorStmt(str(name), args, span_of(meta), span_of(name))

    def objective_stmt(self, meta, children):
        name = children[0]
        args = children[1] if len(children) > 1 else ()
        return ObjectiveStmt(str(name), args, span_of(meta), span_of(name))

    def train_stmt(self, meta, children):
        args = children[0] if children else ()
        return TrainStmt(args, span_of(meta))

    def repeat_stmt(self, meta, children):
        return Repeat(children[0], tuple(children[1:]), span_of(meta))

    def call_stmt(self, meta, children):
        name = children[0]
        rest = children[1:]
        parts = rest.pop() if rest and isinstance(rest[-1], list) else None
        has_parens = bool(rest)
        args = rest[0] if has_parens else ()
        return Call(str(name), args, span_of(name), has_parens, None if parts is None else tuple(parts))

    def layer_body(self, meta, children):
        return list(children)

    def body_part(self, meta, children):
        return BodyPart(str(children[0]), tuple(children[1:]), span_of(meta), span_of(children[0]))

    def arg_list(self, meta, children):
        return tuple(c for c in children if c is not None)

    def named_arg(self, meta, children):
        return Arg(str(children[0]), children[1], span_of(children[0]))

    def positional_arg(self, meta, children):
        return Arg(None, children[0], span_of(meta))

    def number(self, meta, children):
        return Literal(_parse_number(str(children[0])), span_of(meta))

    def true(self, meta, children):
        return Literal(True, span_of(meta))

    def false(self, meta, children):
        return Literal(False, span_of(meta))

    def string(self, meta, children):
        import ast

        tok = str(children[0])
        try:
            text = ast.literal_eval(tok)
        except Exception:  # pragma: no cover - the grammar only admits valid escapes
            text = tok[1:-1]
        return Literal(text, span_of(meta))

    def list_value(self, meta, children):
        return ListValue(tuple(c for c in children if c is not None), span_of(meta))

    def call_value(self, meta, children):
        return CallValue(str(children[0]), children[1], span_of(meta))

    def name_value(self, meta, children):
        return Name(str(children[0]), span_of(meta))

    def ref_value(self, meta, children):
        tok: Token = children[0]
        sp = span_of(meta)
        return Ref(str(tok), sp)


_RULE_METHODS = tuple(name for name, v in vars(SyntaxBuilder).items() if hasattr(v, "visit_wrapper"))
