"""Spans and errors as LSP values: ranges, locations and diagnostics.

A :class:`~flowdsl.errors.Span` is 1-based (line, character column) with an exclusive end column;
an LSP range is 0-based with UTF-16 columns. A diagnostic carries the checker's message as
``flowdsl check`` prints it after ``file:line:col: error:`` (notes follow on their own lines).
"""

from __future__ import annotations

from lsprotocol import types as T

from flowdsl.errors import FlowDSLError, Span
from flowdsl.lsp.analysis import Analysis, to_lsp_col

__all__ = ["span_range", "position", "diagnostics", "SOURCE"]

SOURCE = "flowdsl"


def position(an: Analysis, line: int, col: int) -> T.Position:
    """1-based (line, character column) -> LSP position."""
    i0 = max(0, line - 1)
    return T.Position(line=i0, character=to_lsp_col(an.line(i0), max(0, col - 1)))


def span_range(an: Analysis, sp: Span) -> T.Range:
    """The range of ``sp``: to its end when it has one after its start, else one character."""
    if not sp.known:
        return T.Range(start=T.Position(line=0, character=0), end=T.Position(line=0, character=1))
    start = position(an, sp.line, max(sp.column, 1))
    if sp.end_line and (sp.end_line, sp.end_column) > (sp.line, sp.column):
        end = position(an, sp.end_line, sp.end_column)
    else:
        end = position(an, sp.line, max(sp.column, 1) + 1)
    return T.Range(start=start, end=end)


def _diagnostic(an: Analysis, e: FlowDSLError, severity: T.DiagnosticSeverity) -> T.Diagnostic:
    message = "\n".join([e.message, *(f"note: {n}" for n in e.notes)])
    return T.Diagnostic(range=span_range(an, e.span), message=message, severity=severity, source=SOURCE)


def diagnostics(an: Analysis) -> list[T.Diagnostic]:
    """The error that stopped the checker (if any) and its warnings, as ``flowdsl check`` reports them."""
    out = []
    if an.error is not None:
        out.append(_diagnostic(an, an.error, T.DiagnosticSeverity.Error))
    if an.internal is not None:
        out.append(
            T.Diagnostic(
                range=span_range(an, Span()), message=an.internal, severity=T.DiagnosticSeverity.Error, source=SOURCE
            )
        )
    out.extend(_diagnostic(an, w, T.DiagnosticSeverity.Warning) for w in an.warnings)
    return out
