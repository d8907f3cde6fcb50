"""Hover: what the thing under the cursor means, as Markdown.

* a layer: its one line of math, its arguments with their defaults (and enumeration values),
  and the shape in → out of every instance the statement makes (one per repeat copy and per
  block call, in forward order), read from the checked graph;
* a block call or a block's name: the block's signature ``block step(hidden=64, kernel=3)``;
* a prior or objective: its arguments with their defaults;
* the ``context`` statement (its keyword or kind): the context's shape per example and, from the
  checked graph, where it enters (the layers that read it, the prior);
* ``$param``: the parameter's value at each use: per layer instance when it is a layer's
  argument, and per call of the block (followed through the blocks that pass it on).
"""

from __future__ import annotations

import re

from lsprotocol import types as T

from flowdsl import syntax as S
from flowdsl.compiler.ir import _shape
from flowdsl.errors import Span
from flowdsl.lsp import catalog
from flowdsl.lsp.analysis import Analysis, StmtAt
from flowdsl.lsp.convert import span_range
from flowdsl.wording import plural

__all__ = ["hover", "word_at", "block_signature", "source_text"]

_WORD = re.compile(r"\$?[A-Za-z_][A-Za-z0-9_]*")
MAX_INSTANCES = 40  # instances listed in one hover (the rest are counted)


def word_at(line: str, col0: int) -> tuple[str, int] | None:
    """The identifier (or ``$param``) under character column ``col0`` and its start column."""
    for m in _WORD.finditer(line):
        if m.start() <= col0 <= m.end():
            return m.group(), m.start()
    return None


def source_text(an: Analysis, sp) -> str:
    """The text of a one-line span as written."""
    if not sp.known or sp.end_line != sp.line:
        return "…"
    return an.line(sp.line - 1)[sp.column - 1 : sp.end_column - 1]


def block_signature(an: Analysis, b: S.BlockDef) -> str:
    params = ", ".join(p.name if p.default is None else f"{p.name}={source_text(an, p.default.span)}" for p in b.params)
    return f"block {b.name}({params})"


def _args_line(args: list[catalog.ArgInfo]) -> str:
    if not args:
        return "no arguments"
    parts = []
    for a in args:
        txt = f"`{a.signature()}`"
        if a.choices and len(a.choices) > 1:
            txt += " (" + " | ".join(a.choices) + ")"
        parts.append(txt)
    return ", ".join(parts)


def _instances_md(nodes) -> list[str]:
    out = [f"**shape in → out** ({len(nodes)} instance{'s' if len(nodes) != 1 else ''}):"]
    for n in nodes[:MAX_INSTANCES]:
        shape = f"{_shape(n.in_shape)} → {_shape(n.out_shape)}"
        if n.latent_shape is not None:
            shape += f" + latent {_shape(n.latent_shape)}"
        via = f" (via {' > '.join(n.via)})" if n.via else ""
        out.append(f"- `{n.id}`{via}: {shape}")
    if len(nodes) > MAX_INSTANCES:
        out.append(f"- … and {len(nodes) - MAX_INSTANCES} more")
    return out


def _layer_md(an: Analysis, name: str, at: StmtAt | None) -> list[str]:
    from flowdsl.compiler.kinds import get_layer

    kind = get_layer(name)
    md = [f"**{name}** — {kind.description}" if kind.description else f"**{name}**", ""]
    md += [f"`{catalog.LAYER_MATH.get(name, kind.description or name)}`", ""]
    md += ["arguments: " + _args_line(catalog.layer_args(name)), ""]
    if at is not None:
        nodes = an.instances.get((at.stmt.span.line, at.stmt.span.column), [])
        if nodes:
            md += _instances_md(nodes)
            if an.graph is None:
                md.append("_(shapes as far as the checker got: the spec has an error)_")
        else:
            md.append("_no shapes: the spec has an error before this layer's shape is known_")
    return md


def call_site_values(an: Analysis, block: str, param: str, depth: int = 0) -> list[tuple[str, str]]:
    """(value as written, where) for ``param`` at each call of ``block``; a value that is itself a
    ``$param`` of the calling block is followed to that block's calls."""
    b = an.blocks.get(block)
    if b is None or depth > 16:
        return []
    p = next((p for p in b.params if p.name == param), None)
    out = []
    for s in an.calls():
        st = s.stmt
        if st.name != block:
            continue
        copies = 1
        for r in s.repeats:
            copies *= r.count.value if isinstance(r.count, S.Literal) and isinstance(r.count.value, int) else 1
        where = f"line {st.span.line}" + (f" in block {s.block.name}" if s.block else "")
        where += f" (×{copies})" if copies > 1 else ""
        arg = next((a for a in st.args if a.name == param), None)
        if arg is None:
            default = source_text(an, p.default.span) if p is not None and p.default is not None else "?"
            out.append((default, where + ", the default"))
        elif isinstance(arg.value, S.Ref) and s.block is not None:
            for v, w in call_site_values(an, s.block.name, arg.value.name, depth + 1):
                out.append((v, f"{where} ← ${arg.value.name} at {w}"))
        else:
            out.append((source_text(an, getattr(arg.value, "span", arg.span)), where))
    return out


def _ref_use(an: Analysis, block: S.BlockDef, line: int, col: int) -> tuple[StmtAt, S.Arg] | None:
    """The statement and argument of ``block`` whose value ``$x`` is at (line, col)."""
    for s in an.statements:
        if s.block is not block or not isinstance(s.stmt, S.Call):
            continue
        for a in s.stmt.args:
            v = a.value
            if isinstance(v, S.Ref) and v.span.line == line and v.span.column <= col <= v.span.end_column:
                return s, a
    return None


def _param_md(an: Analysis, name: str, line: int, col: int) -> list[str] | None:
    b = an.block_at(line)
    if b is None:
        return None
    p = next((p for p in b.params if p.name == name), None)
    if p is None:
        return [f"`${name}`: not a parameter of block {b.name}"]
    default = f", default {source_text(an, p.default.span)}" if p.default is not None else " (no default)"
    md = [f"**${name}** — parameter of `{block_signature(an, b)}`{default}", ""]
    use = _ref_use(an, b, line, col)
    if use is not None and catalog.layer_args(use[0].stmt.name) is not None:
        st, arg = use
        nodes = an.instances.get((st.stmt.span.line, st.stmt.span.column), [])
        if nodes:
            md.append(f"value as `{st.stmt.name}({arg.name}=…)` in each instance:")
            for n in nodes[:MAX_INSTANCES]:
                md.append(f"- `{n.id}`: {arg.name}={catalog.value_text(getattr(n.args, arg.name, '?'))}")
            if len(nodes) > MAX_INSTANCES:
                md.append(f"- … and {len(nodes) - MAX_INSTANCES} more")
            md.append("")
    sites = call_site_values(an, b.name, name)
    if sites:
        md.append(f"value at each call of {b.name}:")
        md += [f"- {v} — {w}" for v, w in sites[:MAX_INSTANCES]]
    else:
        md.append(f"block {b.name} is not called")
    return md


_CONTEXT_MEANS = {
    "label": "an integer class in 0…K−1 per example (a long tensor (B,))",
    "vector": "a real vector per example (a float tensor (B, D))",
    "image": "an image per example (a float tensor (B, C, H, W)), resized to each layer's height and width",
}


def _context_at(an: Analysis, line: int, col: int) -> S.ContextStmt | None:
    """The ``context`` statement whose keyword or kind is under 1-based (line, col)."""
    for s in an.statements:
        st = s.stmt
        if isinstance(st, S.ContextStmt) and st.span.line == line:
            end = st.kind_span.end_column if st.kind_span.end_line == line else st.span.column + 7
            if st.span.column <= col <= end:
                return st
    return None


def _context_md(an: Analysis, st: S.ContextStmt) -> list[str]:
    args = catalog.context_args(st.kind)
    if args is None:
        return [f"**context {st.kind}**: unknown context kind; use " + ", ".join(catalog.CONTEXT_KINDS)]
    md = [f"**context {st.kind}** — {_CONTEXT_MEANS[st.kind]}", "", "arguments: " + _args_line(args), ""]
    graph = an.graph
    context = getattr(graph, "context", None)
    if context is None:
        md.append("_no shape: the spec has an error_")
        return md
    md.append(f"**shape** per example: `{_shape(context.shape)}`")
    nodes = graph.context_nodes
    enters = [f"`{nid}`" for nid in nodes[:MAX_INSTANCES]]
    if len(nodes) > MAX_INSTANCES:
        enters.append(f"… and {len(nodes) - MAX_INSTANCES} more")
    if graph.prior_conditional():
        enters.append(f"the prior `{graph.spec.prior.name}`")
    md.append("enters: " + (", ".join(enters) if enters else "nothing"))
    return md


def _kind_md(what: str, name: str, args) -> list[str]:
    return [f"**{what} {name}**", "", "arguments: " + _args_line(args)]


def hover(an: Analysis, line0: int, col0: int) -> T.Hover | None:
    """The hover at 0-based line ``line0`` and character column ``col0`` of ``an``'s text (an
    analysis with a syntax tree; shapes from its graph, or as far as its passes got)."""
    hit = word_at(an.line(line0), col0)
    if hit is None:
        return None
    word, start = hit
    line, col = line0 + 1, start + 1
    sp = Span(line, col, line, col + len(word))
    md: list[str] | None = None
    if word.startswith("$"):
        md = _param_md(an, word[1:], line, col)
    elif (cst := _context_at(an, line, col)) is not None:
        md = _context_md(an, cst)
    else:
        at = an.stmt_at(line, col)
        st = at.stmt if at is not None else None
        b = an.blocks.get(word)
        if b is not None and (isinstance(st, S.Call) or b.name_span.line == line):
            n_calls = sum(1 for s in an.calls() if s.stmt.name == word)
            md = [f"```flowdsl\n{block_signature(an, b)}\n```"]
            md.append(f"defined on line {b.name_span.line}; {plural(n_calls, 'call')}")
        elif isinstance(st, S.Call) and catalog.layer_args(st.name) is not None:
            md = _layer_md(an, st.name, at)
        elif isinstance(st, S.PriorStmt) and catalog.prior_args(st.name) is not None:
            md = _kind_md("prior", st.name, catalog.prior_args(st.name))
        elif isinstance(st, S.ObjectiveStmt) and catalog.objective_args(st.name) is not None:
            md = _kind_md("objective", st.name, catalog.objective_args(st.name))
    if md is None:
        return None
    return T.Hover(contents=T.MarkupContent(kind=T.MarkupKind.Markdown, value="\n".join(md)), range=span_range(an, sp))
