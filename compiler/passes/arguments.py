"""Reading and validating the arguments of a call, for the ``expand`` pass.

:class:`ArgumentReader` turns written values into Python values (``$param`` substitution, number
ranges, lists, nested calls), reads a call's named arguments (:class:`ArgsRead`, with where each
was written and, for values passed through block parameters, where they came from:
:class:`Origin`) and validates them against a kind's ``Args`` model, raising located errors
through the pass's :class:`~flowdsl.compiler.passes.diagnostics.Diagnostics` (``self.d``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from pydantic import ValidationError

from flowdsl import syntax as S
from flowdsl.compiler.limits import LIMITS
from flowdsl.errors import ArgumentValueError, Span, did_you_mean, show_value

__all__ = ["ArgumentReader", "ArgsRead", "Origin", "pydantic_message"]


class Origin(NamedTuple):
    """Where a block-parameter value was written: ``span`` of the value token (at the outermost
    call, or the default), the (block, parameter) hops it went through (innermost first, as
    nested pairs ``((block, parameter), outer hops or ())``, so passing a value one block deeper
    costs the same however deep the chain), whether it is a default, and ``use``, the ``$param``
    it was read from."""

    span: Span
    hops: tuple
    default: bool = False
    use: Span = Span()

    def describe(self) -> str:
        parts, hops = [], self.hops
        while hops:
            (b, p), hops = hops
            parts.append(f"block {b}'s parameter {p}")
        if self.default:
            parts[-1] = "the default of " + parts[-1]
        return ", from ".join(parts)


class ArgsRead(NamedTuple):
    """The arguments of one call as read: name -> value, -> span of the name, -> span of the
    value, -> :class:`Origin` (values given as ``$param``), -> the written value (syntax)."""

    vals: dict[str, Any]
    spans: dict[str, Span]
    vspans: dict[str, Span]
    origins: dict[str, Origin]
    syntax: dict[str, S.Value]


class ArgumentReader:
    """Mixin of the expansion pass: needs ``self.d``, the pass's Diagnostics."""

    # -- values -------------------------------------------------------------------------
    def value(self, v: S.Value, env: dict[str, tuple[Any, Span]]) -> Any:
        if isinstance(v, S.Literal):
            x = v.value
            if isinstance(x, S.BigNumber):
                self.d.fail(f"the number {x[:24]}... is too large (at most {LIMITS.max_int})", v.span)
            if isinstance(x, int) and not isinstance(x, bool) and abs(x) > LIMITS.max_int:
                self.d.fail(
                    f"the number {str(x)[:24]}{'...' if len(str(x)) > 24 else ''} is too large "
                    f"(at most {LIMITS.max_int})",
                    v.span,
                )
            if isinstance(x, float) and not math.isfinite(x):
                self.d.fail("the number is out of range (overflows to infinity)", v.span)
            return x
        if isinstance(v, S.Name):
            return v.name
        if isinstance(v, S.Ref):
            if v.name not in env:
                if env.get("__default__"):
                    block, param = env["__default__"]
                    where = f"the default of parameter {param} of block {block} (defaults cannot refer to parameters)"
                elif env.get("__block__"):
                    where = "this block"
                else:
                    where = "the flow body (only blocks have parameters)"
                known = [k for k in env if not k.startswith("__")]
                self.d.fail(f"unknown parameter '${v.name}' in {where}{did_you_mean(v.name, known)}", v.span)
            return env[v.name][0]
        if isinstance(v, S.ListValue):
            if len(v.items) > LIMITS.max_list:
                self.d.fail(f"a list of {len(v.items)} values is longer than the limit of {LIMITS.max_list}", v.span)
            return [self.value(x, env) for x in v.items]
        if isinstance(v, S.CallValue):
            args = {}
            for a in v.args:
                if a.name is None:
                    self.d.fail(f"arguments of '{v.name}' must be named (name=value)", a.span)
                if a.name in args:
                    self.d.fail(f"argument '{a.name}' given twice", a.span)
                args[a.name] = self.value(a.value, env)
            return {"call": v.name, "args": args}
        raise AssertionError(v)  # pragma: no cover

    @staticmethod
    def origin(v: S.Value, env) -> "Origin | None":
        """Where a ``$param`` value was written (the call's argument or the default), if it is one."""
        if isinstance(v, S.Ref) and v.name in env and not v.name.startswith("__"):
            return env[v.name][2]
        return None

    def named_args(self, args: tuple[S.Arg, ...], env, what: str) -> ArgsRead:
        """The call's arguments, read and substituted (see :class:`ArgsRead`)."""
        read = ArgsRead({}, {}, {}, {}, {})
        vals, spans, vspans = read.vals, read.spans, read.vspans
        for a in args:
            if a.name is None:
                self.d.fail(f"arguments of {what} must be named (name=value)", a.span)
            if a.name in vals:
                self.d.fail(f"argument '{a.name}' of {what} given twice", a.span)
            vals[a.name] = self.value(a.value, env)
            spans[a.name] = a.span
            vspans[a.name] = getattr(a.value, "span", a.span)
            read.syntax[a.name] = a.value
            o = self.origin(a.value, env)
            if o is not None:
                read.origins[a.name] = o._replace(use=vspans[a.name])
        return read

    def validate_args(self, model: type, read: ArgsRead, what: str, call_span: Span) -> Any:
        vals, spans, vspans, origins = read.vals, read.spans, read.vspans, read.origins
        known = list(model.model_fields)
        for name in vals:
            if name not in model.model_fields:
                hint = did_you_mean(name, known)
                listing = f"; known: {', '.join(known)}" if known and not hint else ""
                if not known:
                    listing = f"; {what} takes no arguments"
                self.d.fail(f"unknown argument '{name}' for {what}{hint}{listing}", spans[name])
        try:
            return model.model_validate(vals)
        except ValidationError as e:
            err = e.errors()[0]
            loc = err.get("loc") or ()
            name = str(loc[0]) if loc else None
            if err.get("type") == "missing" and name:
                self.d.fail(f"{what} needs the argument '{name}'", call_span)
            val = vals.get(name) if name else None
            msg = pydantic_message(err)
            hint = ""
            ctx = err.get("ctx") or {}
            inner = ctx.get("error")
            if isinstance(inner, ArgumentValueError):
                # a validator located the problem inside a nested value: put the caret on that part
                sub = _sub_span(read.syntax.get(name), inner.path)
                self.d.fail(inner.message, sub or vspans.get(name, call_span))
            if isinstance(val, str) and "expected" in ctx:
                opts = [o.strip().strip("'") for o in str(ctx["expected"]).replace(" or ", ",").split(",")]
                hint = did_you_mean(val, [o for o in opts if o])
            shown = show_value(val)
            where = vspans.get(name, call_span)
            via = ""
            if name in origins:
                # a value passed through block parameters is reported where it was written
                o = origins[name]
                where = o.span
                via = f" (via {o.describe()}, used at line {o.use.line})"
            self.d.fail(f"invalid value {shown} for argument '{name}' of {what}{via}: {msg}{hint}", where)


def pydantic_message(err: dict) -> str:
    """A pydantic error's message without its "Value error, " / "Assertion failed, " prefix."""
    ctx = err.get("ctx") or {}
    if isinstance(ctx.get("error"), (ValueError, AssertionError)) and str(ctx["error"]):
        return str(ctx["error"])
    msg = str(err.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg


def _sub_span(v: S.Value | None, path: tuple[str, ...]) -> Span | None:
    """The span of one part of a written value (see :class:`ArgumentValueError`), or None."""
    if v is None or not path:
        return None
    if path[0] == "name":
        if isinstance(v, S.Name):
            return v.span
        if isinstance(v, S.CallValue) and v.span.known:
            return Span(v.span.line, v.span.column, v.span.line, v.span.column + len(v.name))
        return None
    if path[0] in ("arg", "value") and len(path) > 1 and isinstance(v, S.CallValue):
        for a in v.args:
            if a.name == path[1]:
                return a.span if path[0] == "arg" else getattr(a.value, "span", a.span)
    return None
