"""Completion from the text around the cursor: it works on text that does not parse.

The line being typed is usually incomplete (``conv1x1(``, ``coupling(kind=``), so nothing here
needs a syntax tree. The text before the cursor is scanned with comments and strings blanked
out (same length, so offsets hold):

* inside a call's parentheses (the innermost unmatched ``(`` since the last ``{`` or ``}``):
  after ``name=`` the enumeration values of that argument (and ``$parameters`` inside a block),
  else the argument names the call has not given yet; the call is a layer, a block (its
  parameters read from its ``block name(...)`` header), ``prior``/``objective``/``input``/``context``
  NAME, or ``train``;
* after ``prior``/``objective``/``input``/``context``/``dequantize``: the names that statement takes;
* after ``$`` inside a block: the block's parameters;
* where a statement starts: layer and block names, the statement keywords, ``prior NAME`` and
  ``objective NAME`` (the flow-only statements only outside blocks).
"""

from __future__ import annotations

import re

from lsprotocol import types as T

from flowdsl.lsp import catalog
from flowdsl.lsp.analysis import to_lsp_col

__all__ = ["complete", "blank", "block_headers", "enclosing_block"]

_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"?|#[^\n]*')
_BLOCK = re.compile(r"\bblock\s+([A-Za-z_]\w*)\s*(?:\(([^()]*)\))?\s*\{?")
_PARAM = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:=\s*(.*?))?\s*$")
_HEAD = re.compile(r"(?:\b(prior|objective|input|context)[ \t]+)?([A-Za-z_]\w*)\s*$")
_SCAN_LIMIT = 20_000  # characters looked back for an open parenthesis


def blank(text: str) -> str:
    """``text`` with comments and string contents replaced by spaces (offsets unchanged)."""

    def spaces(m: re.Match) -> str:
        return " " * len(m.group())

    # strings first (a '#' inside a string is not a comment), then comments
    out = []
    pos = 0
    for m in _QUOTED.finditer(text):
        out.append(text[pos : m.start()])
        out.append(spaces(m))
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def block_headers(clean: str) -> dict[str, list[catalog.ArgInfo]]:
    """Every ``block NAME(params)`` header of the (blanked) text: name -> its parameters."""
    out: dict[str, list[catalog.ArgInfo]] = {}
    for m in _BLOCK.finditer(clean):
        params = []
        for piece in (m.group(2) or "").split(","):
            pm = _PARAM.match(piece)
            if pm:
                params.append(catalog.ArgInfo(pm.group(1), pm.group(2) or None))
        out.setdefault(m.group(1), params)
    return out


def enclosing_block(clean: str, offset: int) -> str | None:
    """The block whose braces are open at ``offset`` of the (blanked) text, if any."""
    last = None
    for m in _BLOCK.finditer(clean, 0, offset):
        if m.group().endswith("{"):
            last = m
    if last is None:
        return None
    depth = 1
    for m in re.finditer(r"[{}]", clean[last.end() : offset]):
        depth += 1 if m.group() == "{" else -1
        if depth == 0:
            return None
    return last.group(1)


def _open_paren(clean: str, offset: int) -> int | None:
    """The index of the innermost unmatched '(' before ``offset`` in the current statement."""
    depth = 0
    stop = max(0, offset - _SCAN_LIMIT)
    for i in range(offset - 1, stop - 1, -1):
        c = clean[i]
        if c == ")":
            depth += 1
        elif c == "(":
            if depth == 0:
                return i
            depth -= 1
        elif c in "{}":
            return None
    return None


def _top_level_segments(s: str) -> list[str]:
    """``s`` split at the commas outside nested brackets."""
    parts, depth, cur = [], 0, []
    for c in s:
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def _item(label: str, kind: T.CompletionItemKind, detail: str = "", insert: str | None = None, **kw):
    return T.CompletionItem(label=label, kind=kind, detail=detail or None, insert_text=insert, **kw)


def _param_items(params, line: str, line0: int, start: int, col0: int) -> list[T.CompletionItem]:
    """``$name`` items replacing the text from ``start`` (the '$' or the word) to the cursor."""
    rng = T.Range(
        start=T.Position(line=line0, character=to_lsp_col(line, start)),
        end=T.Position(line=line0, character=to_lsp_col(line, col0)),
    )
    return [
        _item(
            f"${p.name}",
            T.CompletionItemKind.Variable,
            "block parameter" + (f", default {p.default}" if p.default else ""),
            filter_text=f"${p.name}",
            text_edit=T.TextEdit(range=rng, new_text=f"${p.name}"),
        )
        for p in params
    ]


def _call_args(kw: str | None, name: str, headers) -> list[catalog.ArgInfo] | None:
    if kw == "prior":
        return catalog.prior_args(name)
    if kw == "objective":
        return catalog.objective_args(name)
    if kw == "input":
        return catalog.input_args(name)
    if kw == "context":
        return catalog.context_args(name)
    if name == "train":
        return catalog.train_args()
    if name in headers:
        return headers[name]
    return catalog.layer_args(name)


def _statement_items(in_block: bool, headers) -> list[T.CompletionItem]:
    items = []
    for name in catalog.layer_names():
        items.append(_item(name, T.CompletionItemKind.Function, "layer", sort_text=f"1{name}"))
    for name, params in headers.items():
        sig = ", ".join(p.signature() for p in params)
        items.append(_item(name, T.CompletionItemKind.Module, f"block {name}({sig})", sort_text=f"0{name}"))
    keywords = ("repeat",) if in_block else catalog.STATEMENT_KEYWORDS
    for kw in keywords:
        items.append(_item(kw, T.CompletionItemKind.Keyword, "statement", sort_text=f"2{kw}"))
    if not in_block:
        for name in catalog.prior_names():
            items.append(_item(f"prior {name}", T.CompletionItemKind.Class, "prior", sort_text=f"3{name}"))
        for name in catalog.objective_names():
            items.append(_item(f"objective {name}", T.CompletionItemKind.Event, "objective", sort_text=f"4{name}"))
    return items


def complete(text: str, line0: int, col0: int) -> list[T.CompletionItem]:
    """Completion items at 0-based ``line0`` and character column ``col0`` of ``text``."""
    lines = text.split("\n")
    if line0 >= len(lines):
        return []
    line = lines[line0]
    col0 = min(col0, len(line))
    offset = sum(len(x) + 1 for x in lines[:line0]) + col0
    clean = blank(text)
    before = clean[offset - col0 : offset]
    for m in _QUOTED.finditer(line):
        closed = m.group().startswith('"') and len(m.group()) > 1 and m.group().endswith('"')
        if m.start() < col0 and (col0 < m.end() or not closed):
            return []  # the cursor is in a comment or a string
    headers = block_headers(clean)
    block = enclosing_block(clean, offset)
    params = headers.get(block, []) if block else []

    dollar = re.search(r"\$[A-Za-z_0-9]*$", before)
    if dollar:
        return _param_items(params, line, line0, dollar.start(), col0)

    open_at = _open_paren(clean, offset)
    if open_at is not None:
        head = clean[max(0, open_at - 200) : open_at]
        hm = _HEAD.search(head)
        if hm is None or re.search(r"=\s*$", head[: hm.start(2)]):
            return []  # a nested value call (estimator=resnet(...)) or no name
        args = _call_args(hm.group(1), hm.group(2), headers)
        if args is None:
            return []
        inside = clean[open_at + 1 : offset]
        eol = offset + len(line) - col0
        close = clean.find(")", offset, eol)
        after = clean[offset : close if close >= 0 else eol]
        segment = _top_level_segments(inside)[-1]
        vm = re.match(r"^\s*([A-Za-z_]\w*)\s*=\s*(\S*)$", segment)
        if vm:
            info = next((a for a in args if a.name == vm.group(1)), None)
            items = [
                _item(v, T.CompletionItemKind.EnumMember, vm.group(1) + (" (default)" if v == info.default else ""))
                for v in (info.choices if info else ())
            ]
            if params:
                start = col0 - len(vm.group(2))
                items += _param_items(params, line, line0, start, col0)
            return items
        if re.match(r"^\s*[A-Za-z_]?\w*$", segment):
            given = set(re.findall(r"([A-Za-z_]\w*)\s*=", inside + "," + after))
            return [
                _item(
                    a.name,
                    T.CompletionItemKind.Property,
                    a.signature() + (f" ({' | '.join(a.choices)})" if len(a.choices) > 1 else ""),
                    insert=f"{a.name}=",
                )
                for a in args
                if a.name not in given
            ]
        return []

    km = re.match(r"^\s*(prior|objective|input|context|dequantize)\s+(\w*)$", before)
    if km:
        names = {
            "prior": catalog.prior_names,
            "objective": catalog.objective_names,
            "input": lambda: list(catalog.INPUT_KINDS),
            "context": lambda: list(catalog.CONTEXT_KINDS),
            "dequantize": lambda: list(catalog.DEQUANTIZE_MODES),
        }[km.group(1)]()
        return [_item(n, T.CompletionItemKind.EnumMember, km.group(1)) for n in names]
    if re.search(r"(^|[{}])\s*[A-Za-z_]?\w*$", before):
        return _statement_items(block is not None, headers)
    return []
