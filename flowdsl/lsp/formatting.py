"""Formatting: the document through ``flowdsl fmt``'s formatter (:func:`flowdsl.fmt.format_source`),
returned as one edit that replaces the whole text (none when it is already formatted). Text the
formatter rejects (it does not parse) is left alone: the diagnostics already say why."""

from __future__ import annotations

from lsprotocol import types as T

from flowdsl.errors import FlowDSLError
from flowdsl.lsp.analysis import to_lsp_col

__all__ = ["format_edits"]


def format_edits(text: str, filename: str) -> list[T.TextEdit] | None:
    from flowdsl.fmt import format_source

    try:
        new = format_source(text, filename)
    except FlowDSLError:
        return None
    if new == text:
        return []
    parts = text.split("\n")
    end = T.Position(line=len(parts) - 1, character=to_lsp_col(parts[-1], len(parts[-1])))
    return [T.TextEdit(range=T.Range(start=T.Position(line=0, character=0), end=end), new_text=new)]
