"""Navigation and outline: document symbols, go to definition, find references, inlay hints.

* document symbols: each block (its repeats nested), the flow (its repeats nested);
* definition: on a block call (or the block's name), the block's name in its definition; on
  ``$param`` inside a block, the parameter in the block's header;
* references: every call of a block (and its definition when asked);
* inlay hints: after each layer statement, the shape it outputs (``→ (8, 2, 2)``; the distinct
  shapes of its instances joined by ``|`` when a block is called on several shapes).
"""

from __future__ import annotations

from lsprotocol import types as T

from flowdsl import syntax as S
from flowdsl.compiler.ir import _shape
from flowdsl.errors import Span
from flowdsl.lsp.analysis import Analysis, to_lsp_col
from flowdsl.lsp.convert import span_range
from flowdsl.lsp.hover import block_signature, source_text, word_at

__all__ = ["document_symbols", "definition", "references", "inlay_hints"]


def _repeat_symbols(an: Analysis, body) -> list[T.DocumentSymbol]:
    out = []
    for st in body:
        if isinstance(st, S.Repeat):
            head = Span(st.span.line, st.span.column, st.span.line, st.span.column + len("repeat"))
            out.append(
                T.DocumentSymbol(
                    name=f"repeat {source_text(an, getattr(st.count, 'span', Span()))}",
                    kind=T.SymbolKind.Array,
                    range=span_range(an, st.span),
                    selection_range=span_range(an, head),
                    children=_repeat_symbols(an, st.body),
                )
            )
        elif isinstance(st, S.Call) and st.parts:
            for part in st.parts:
                out.extend(_repeat_symbols(an, part.body))
    return out


def document_symbols(an: Analysis) -> list[T.DocumentSymbol]:
    if an.tree is None:
        return []
    out = []
    for b in an.tree.blocks:
        out.append(
            T.DocumentSymbol(
                name=b.name,
                detail=block_signature(an, b),
                kind=T.SymbolKind.Function,
                range=span_range(an, b.span),
                selection_range=span_range(an, b.name_span),
                children=_repeat_symbols(an, b.body),
            )
        )
    f = an.tree.flow
    out.append(
        T.DocumentSymbol(
            name=f.name,
            detail="flow",
            kind=T.SymbolKind.Module,
            range=span_range(an, f.span),
            selection_range=span_range(an, f.name_span),
            children=_repeat_symbols(an, f.body),
        )
    )
    return out


def _name_at(an: Analysis, line0: int, col0: int) -> str | None:
    hit = word_at(an.line(line0), col0)
    return hit[0] if hit else None


def definition(an: Analysis, uri: str, line0: int, col0: int) -> T.Location | None:
    word = _name_at(an, line0, col0)
    if word is None:
        return None
    if word.startswith("$"):
        b = an.block_at(line0 + 1)
        p = next((p for p in b.params if p.name == word[1:]), None) if b is not None else None
        if p is None:
            return None
        sp = Span(p.span.line, p.span.column, p.span.line, p.span.column + len(p.name))
        return T.Location(uri=uri, range=span_range(an, sp))
    b = an.blocks.get(word)
    if b is None:
        return None
    return T.Location(uri=uri, range=span_range(an, b.name_span))


def references(an: Analysis, uri: str, line0: int, col0: int, include_declaration: bool) -> list[T.Location]:
    word = _name_at(an, line0, col0)
    b = an.blocks.get(word) if word else None
    if b is None:
        return []
    out = [T.Location(uri=uri, range=span_range(an, b.name_span))] if include_declaration else []
    out += [T.Location(uri=uri, range=span_range(an, s.stmt.span)) for s in an.calls() if s.stmt.name == word]
    return out


def _statement_end(an: Analysis, st: S.Call) -> tuple[int, int]:
    """0-based (line, character column) just after a layer statement's arguments (or name)."""
    line0, col = st.span.line - 1, st.span.end_column - 1
    text = an.line(line0)
    if not st.has_parens:
        return line0, col
    depth = 0
    for i in range(col, len(text)):
        c = text[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return line0, i + 1
        elif c == "#":
            break
    return line0, col  # arguments over several lines: after the name


def inlay_hints(an: Analysis, rng: T.Range) -> list[T.InlayHint]:
    """``→ shape`` after each layer statement between the range's lines (when the checker
    failed, those whose shapes it reached)."""
    if an.tree is None:
        return []
    first, last = rng.start.line + 1, rng.end.line + 1
    out = []
    for s in an.calls():
        st = s.stmt
        if not (first <= st.span.line <= last):
            continue
        nodes = [n for n in an.instances.get((st.span.line, st.span.column), ()) if n.out_shape is not None]
        if not nodes:
            continue
        shapes = list(dict.fromkeys(_shape(n.out_shape) for n in nodes))
        label = "→ " + " | ".join(shapes[:4]) + (" | …" if len(shapes) > 4 else "")
        line0, col0 = _statement_end(an, st)
        out.append(
            T.InlayHint(
                position=T.Position(line=line0, character=to_lsp_col(an.line(line0), col0)),
                label=label,
                kind=T.InlayHintKind.Type,
                padding_left=True,
            )
        )
    return out
