"""The flow's context (conditional flows) in the passes: reading the ``context`` statement and the
generic resolution of who uses it.

* :func:`read_context` (``expand``): ``context label(classes=K)`` / ``vector(dim=D)`` /
  ``image(channels=C, height=H, width=W)`` -> :class:`~flowdsl.schema.ContextSpec`; unknown kinds and
  arguments get a nearest-name suggestion; an image context's height and width must equal the
  input image's or divide them.
* :func:`resolve_context` (``expand``): every layer whose kind's ``Args`` has a field ``context``
  gets it resolved, bodies of composite layers included: ``None`` (not written) becomes whether
  the file declares a context, so after the pipeline it is always a bool; ``context=true`` without
  a context is a located error. No kind is named here: a kind takes the context by declaring the
  field (``context: Optional[bool] = None``). A prior whose ``Args`` has ``conditional=true``
  needs a context too. A declared context that no layer and no prior uses is an error at the
  ``context`` statement.
The graph records where the context enters as ``FlowGraph.context_nodes``.
"""

from __future__ import annotations

from typing import Any

from flowdsl.compiler.context import CONTEXT_KINDS
from flowdsl.compiler.kinds import get_layer
from flowdsl.compiler.limits import LIMITS
from flowdsl.errors import ResourceLimitError, did_you_mean, show_value
from flowdsl.schema import ContextSpec, InputSpec, LayerSpec, PriorSpec

__all__ = ["read_context", "resolve_context", "takes_context", "EXAMPLE"]

#: how a context statement looks (in messages)
EXAMPLE = "context label(classes=10)"


def takes_context(kind_name: str) -> bool:
    """Whether a layer kind reads the flow's context: its ``Args`` has a field ``context``."""
    kind = get_layer(kind_name)
    return kind is not None and "context" in kind.Args.model_fields


def read_context(reader: Any, entry: Any, inp: InputSpec) -> ContextSpec | None:
    """The :class:`ContextSpec` of the ``context`` statement ``entry`` (``(statement, env)`` or None);
    ``reader`` is the expansion pass (its ``named_args`` and diagnostics ``d``)."""
    if entry is None:
        return None
    st, env = entry
    d = reader.d
    if st.kind not in CONTEXT_KINDS:
        known = ", ".join(CONTEXT_KINDS)
        hint = did_you_mean(st.kind, CONTEXT_KINDS) or f"; use one of {known}"
        d.fail(f"unknown context kind '{st.kind}'{hint}", st.kind_span)
    what = f"context {st.kind}"
    vals, spans, vspans = reader.named_args(st.args, env, what)[:3]
    allowed = CONTEXT_KINDS[st.kind]
    for name in vals:
        if name not in allowed:
            d.fail(f"unknown argument '{name}' for {what}{did_you_mean(name, allowed)}", spans[name])
    for name in allowed:
        if name not in vals:
            d.fail(f"{what} needs the argument '{name}'", st.kind_span)
    for name, v in vals.items():
        if isinstance(v, bool) or not isinstance(v, int):
            d.fail(f"invalid value {show_value(v)} for '{name}' of {what}: expected an integer", vspans[name])
        low = 2 if name == "classes" else 1
        if v < low:
            why = " (one class carries no information)" if name == "classes" else ""
            d.fail(f"'{name}' of {what} must be at least {low}, got {v}{why}", vspans[name])
        if v > LIMITS.max_dim:
            d.fail(f"'{name}' of {what} is {v}, above the limit of {LIMITS.max_dim}", vspans[name], ResourceLimitError)
    ctx = ContextSpec(kind=st.kind, span=st.span, arg_spans=dict(vspans), **vals)
    if ctx.kind == "image" and inp.kind == "image":
        for name in ("height", "width"):
            c, x = getattr(ctx, name), getattr(inp, name)
            if c > x or x % c:
                d.fail(
                    f"the context image's {name} {c} must equal the input's {name} {x} or divide it",
                    vspans[name],
                )
    return ctx


def _resolve_layer(layer: LayerSpec, declared: bool, d: Any) -> LayerSpec:
    update: dict[str, Any] = {}
    if takes_context(layer.kind):
        value = layer.args.context
        if value is None:
            update["args"] = layer.args.model_copy(update={"context": declared})
        elif value and not declared:
            d.fail(
                f"{layer.kind}: context=true, but the flow declares no context "
                f"(add one after the input, e.g. {EXAMPLE})",
                layer.arg_spans.get("context", layer.span),
            )
    if layer.bodies:
        bodies = {name: [_resolve_layer(child, declared, d) for child in body] for name, body in layer.bodies.items()}
        if any(a is not b for name in bodies for a, b in zip(bodies[name], layer.bodies[name])):
            update["bodies"] = bodies
    return layer.model_copy(update=update) if update else layer


def _uses(layer: LayerSpec) -> bool:
    if takes_context(layer.kind) and layer.args.context:
        return True
    return any(_uses(child) for body in layer.bodies.values() for child in body)


def resolve_context(layers: list[LayerSpec], prior: PriorSpec, context: ContextSpec | None, d: Any) -> list[LayerSpec]:
    """``layers`` with every ``context`` argument resolved to a bool (see the module docstring);
    fails on ``context=true`` or a conditional prior without a context, and on an unused context."""
    declared = context is not None
    layers = [_resolve_layer(layer, declared, d) for layer in layers]
    conditional = bool(getattr(prior.args, "conditional", False))
    if conditional and not declared:
        d.fail(
            f"prior {prior.name}: conditional=true needs a context (add one after the input, e.g. {EXAMPLE})",
            prior.arg_spans.get("conditional", prior.span),
        )
    if declared and not conditional and not any(_uses(layer) for layer in layers):
        d.fail(
            f"context {context.kind} is declared but nothing uses it: no layer reads it and the prior is not "
            "conditional; remove the context, or let a layer read it (coupling(..., context=true), the default) "
            "or write prior gaussian(learned=true, conditional=true)",
            context.span,
        )
    return layers
