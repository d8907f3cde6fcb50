"""The flowdsl error family: every user-facing error is a value with a source location.

``FlowDSLError`` carries ``filename``, ``line``, ``column`` (1-based) and renders as::

    specs/bad.flow:4:5: error: unknown layer 'actnrom' (did you mean 'actnorm'?)
        actnrom
        ^~~~~~~

``ParseError`` is raised for text that does not follow the grammar; ``CheckError`` for text that
parses but is rejected by the checker (unknown names, bad values, shapes, ...). The checker raises
them through ``Diagnostics.fail`` (``compiler/passes/expand.py``), the one place in the front end
that turns a location into an error; :meth:`FlowDSLError.render` draws the source line and caret.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = [
    "Span",
    "FlowDSLError",
    "ParseError",
    "CheckError",
    "NotAvailableError",
    "CheckWarning",
    "ResourceLimitError",
    "DataError",
    "CheckpointError",
    "ContextError",
    "NumericalError",
    "NumericalWarning",
    "ArgumentValueError",
    "nearest",
    "did_you_mean",
    "show_value",
    "source_lines",
    "escape_controls",
]


_TAB = 4  # tab stops of the printed source line

# C0 controls but tab and newline, DEL, C1 controls; and the bidirectional overrides, which reorder
# the printed text
_CONTROL = "".join(chr(c) for c in [*range(0, 9), *range(11, 32), *range(0x7F, 0xA0), *range(0x202A, 0x202F)]) + (
    "\u2066\u2067\u2068\u2069"
)
_ESCAPE = str.maketrans({c: f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" for c in _CONTROL})
# in the printed source line each control character becomes ONE visible character (the Unicode
# "control pictures" U+2400..U+2421 for C0 and DEL; U+FFFD else), so the caret stays under its column
_PICTURE = str.maketrans(
    {c: chr(0x2400 + ord(c)) if ord(c) < 32 else "\u2421" if ord(c) == 0x7F else "\ufffd" for c in _CONTROL}
)


def escape_controls(text: str) -> str:
    """``text`` with control characters (NUL, BEL, ESC, DEL, C1, bidi overrides; not tab or
    newline) written as ``\\xNN`` / ``\\uNNNN`` escapes, so an error never prints them raw."""
    return text.translate(_ESCAPE)


@dataclass(frozen=True)
class Span:
    """A location in a spec file: 1-based line and column, plus the end column on that line."""

    line: int = 0
    column: int = 0
    end_line: int = 0
    end_column: int = 0

    @property
    def known(self) -> bool:
        return self.line > 0


def source_lines(text: str) -> list[str]:
    """The lines of a spec text as the lexer counts them: broken at ``\n`` only (``str.splitlines``
    also breaks at ``\v``, ``\f``, a lone ``\r``, U+2028, ...), without a last empty line."""
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return [] if lines == [""] else lines


class FlowDSLError(Exception):
    """Base of every error flowdsl reports to a user.

    Attributes:
        message: the message without location.
        filename: the spec file name (``"<string>"`` for text).
        line, column: 1-based position of the offending token (0 when unknown).
        source_line: the text of that line, when known.
        notes: extra lines printed after the caret.
    """

    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        filename: str = "<string>",
        span: Span | None = None,
        source: str | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        self.message = message
        self.filename = filename
        self.span = span or Span()
        self.line = self.span.line
        self.column = self.span.column
        self.notes = tuple(notes)
        self.source_line = None
        self._empty_file = False
        if source is not None and self.line > 0:
            lines = source_lines(source)
            if self.line <= len(lines):
                self.source_line = lines[self.line - 1]
            elif not lines and self.line == 1:
                # an empty file: no line to show, but still a caret at 1:1 under a placeholder
                self.source_line = ""
                self._empty_file = True
        super().__init__(self.render())

    def render(self) -> str:
        """``file:line:col: error: message``, then the source line with a caret under the span."""
        # control characters from the spec, a file name or data are escaped: a NUL, BEL or ESC
        # printed raw rings the terminal, hides text or changes its colours
        name = escape_controls(str(self.filename)).replace("\n", "\\n")
        loc = f"{name}:{self.line}:{self.column}" if self.line else name
        out = [f"{loc}: {self.kind}: {escape_controls(str(self.message))}"]
        if self.source_line is not None:
            raw = self.source_line.rstrip("\r\n")
            text = "(empty file)" if self._empty_file else raw.expandtabs(_TAB).translate(_PICTURE)
            out.append("    " + text)
            col = max(self.column, 1)
            end = col + 1
            if self.span.end_line == self.span.line and self.span.end_column > self.span.column:
                end = self.span.end_column
            # columns count characters (a tab is one); the printed line has its tabs expanded, so
            # the caret's indent and width are measured on the expanded text up to and through the token
            pad = len(raw[: col - 1].expandtabs(_TAB)) + max(0, col - 1 - len(raw))
            through = len(raw[: end - 1].expandtabs(_TAB)) + max(0, end - 1 - len(raw))
            width = max(1, min(through - pad, max(1, len(text) - pad)))
            out.append("    " + " " * pad + "^" + "~" * (width - 1))
        out.extend(f"  note: {escape_controls(str(n))}" for n in self.notes)
        return "\n".join(out)

    def __str__(self) -> str:  # keep str() in sync if attributes are edited
        return self.render()


class ParseError(FlowDSLError):
    """The text does not follow the grammar (or is not UTF-8)."""


class CheckError(FlowDSLError):
    """The text parses but the checker rejects it (names, values, shapes, invertibility)."""


class NotAvailableError(CheckError):
    """A construct the runtime cannot carry out here (e.g. an objective without a trainer)."""


class CheckWarning(CheckError):
    """A located warning: the spec is accepted, but something in it is likely a mistake. It is a
    value (collected by the checker on ``FlowGraph.warnings``, never raised) rendered like errors:
    ``file:line:col: warning: ...`` with the source line and caret."""

    kind = "warning"


class ResourceLimitError(CheckError):
    """The spec would need more parameters or memory than the configured limit."""


class DataError(FlowDSLError):
    """Training or evaluation data that cannot be used with a spec (missing, wrong shape)."""


class CheckpointError(FlowDSLError):
    """A checkpoint that is corrupt, truncated, or belongs to another spec."""


class ContextError(FlowDSLError):
    """A context given to a model that does not fit what the spec declares (missing, superfluous,
    wrong dtype or shape, a label outside 0…K−1); the message names the declared context."""


class NumericalError(FlowDSLError):
    """A loss, log-det or activation became NaN/Inf; the message names the step and the layer."""


class ArgumentValueError(ValueError):
    """Raised by an argument validator about one part of a nested value such as ``resnet(hiden=8)``.

    ``path`` says which part, so the front end puts the caret there: ``("name",)`` the call's
    (or bare name's) name, ``("arg", k)`` the name of its argument ``k``, ``("value", k)`` the
    value of ``k``. ``message`` is shown as is (no pydantic prefix).
    """

    def __init__(self, message: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = tuple(path)


class NumericalWarning(UserWarning):
    """A layer is close to singular (its inverse may lose precision); names the layer and line."""


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    """The known name closest to ``name`` (or None when nothing is close)."""
    cands = sorted(set(candidates))
    hits = difflib.get_close_matches(name, cands, n=1, cutoff=0.6)
    if hits:
        return hits[0]
    lowered = {c.lower(): c for c in cands}
    if name.lower() in lowered:
        return lowered[name.lower()]
    return None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A suffix `` (did you mean 'x'?)`` or an empty string."""
    hit = nearest(name, candidates)
    return f" (did you mean '{hit}'?)" if hit else ""


def show_value(v) -> str:
    """A spec value as written in a message: ``true``/``false``, a name bare, a call as ``name(...)``."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict) and "call" in v:
        return f"{v['call']}(...)"
    if isinstance(v, str) and v.isidentifier():
        return v
    return repr(v)
