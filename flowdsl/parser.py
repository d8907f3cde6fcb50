"""Text -> syntax tree: the LALR parser built from ``flowdsl.grammar`` with positions kept.

lark's ``UnexpectedInput`` errors become :class:`flowdsl.errors.ParseError` with the file, line,
column and a message that names what was expected in words a user knows.
"""

from __future__ import annotations

import functools
import re

from lark import Lark
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from flowdsl.errors import ParseError, Span, source_lines
from flowdsl.grammar import grammar_text
from flowdsl.syntax import SpecFile, SyntaxBuilder

__all__ = ["parse_syntax", "KEYWORDS"]

KEYWORDS = ("flow block input dequantize prior objective train repeat rg disentangler decimator true false").split()

MAX_SOURCE_BYTES = 1_000_000
MAX_NESTING = 64
MAX_IDENTIFIER = 256
_LONG_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{%d,}" % MAX_IDENTIFIER)
_BRACKET = re.compile(r"[{}()\[\]]")

_TOKEN_WORDS = {
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "EQUAL": "'='",
    "DOLLAR": "'$'",
    "NAME": "a name",
    "SIGNED_NUMBER_LIT": "a number",
    "ESCAPED_STRING": "a string",
    "$END": "end of file",
}


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _describe(expected: set[str]) -> str:
    words = []
    for t in sorted(expected):
        if t.startswith("__ANON") or t.startswith("_"):
            continue
        if t in _TOKEN_WORDS:
            words.append(_TOKEN_WORDS[t])
        elif t.isupper() and t.lower() in KEYWORDS:
            words.append(f"'{t.lower()}'")
        else:
            words.append(t.lower())
    words = sorted(set(words))
    if not words:
        return ""
    if len(words) > 6:
        words = words[:6] + ["..."]
    return ", expected " + " or ".join(words) if len(words) <= 2 else ", expected one of " + ", ".join(words)


def _check_nesting(text: str, filename: str) -> None:
    """Reject absurdly deep bracket nesting before the parser recurses over it."""
    depth = 0
    for m in _BRACKET.finditer(text):  # only the brackets: a Python step per character is slow
        if m.group() in "{([":
            depth += 1
            if depth > MAX_NESTING:
                i = m.start()
                line = text.count("\n", 0, i) + 1
                col = i - (text.rfind("\n", 0, i) + 1) + 1
                raise ParseError(
                    f"nesting deeper than {MAX_NESTING} levels",
                    filename=filename,
                    span=Span(line, col, line, col + 1),
                    source=text,
                )
        else:
            depth = max(0, depth - 1)


#: what the grammar skips when it looks for brackets: comments and strings (grammar/flowdsl.lark)
_BRACKET_OR_SKIPPED = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|[{}()\[\]]')
_CLOSER = {"{": "}", "(": ")", "[": "]"}


def _unclosed_bracket(text: str) -> str:
    """For an unexpected end of file: ``: the '{' at LINE:COL is not closed`` for the innermost
    bracket still open at the end (comments and strings skipped), else ``""``."""
    stack: list[int] = []
    for m in _BRACKET_OR_SKIPPED.finditer(text):
        c = m.group()
        if c in _CLOSER:
            stack.append(m.start())
        elif c in "})]":
            if stack and _CLOSER[text[stack[-1]]] == c:
                stack.pop()
    if not stack:
        return ""
    i = stack[-1]
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return f": the '{text[i]}' at {line}:{col} is not closed"


def parse_syntax(text: str | bytes, filename: str = "<string>") -> tuple[SpecFile, str]:
    """Parse spec text into a :class:`SpecFile`. Returns the tree and the decoded text.

    Raises:
        ParseError: for non-UTF-8 input or text that does not follow the grammar.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            prefix = bytes(text)[: e.start]
            line = prefix.count(b"\n") + 1
            col = e.start - (prefix.rfind(b"\n") + 1) + 1
            raise ParseError(
                f"spec file is not UTF-8 text (byte 0x{bytes(text)[e.start]:02x})",
                filename=filename,
                span=Span(line, col, line, col + 1),
                source=bytes(text).decode("utf-8", "replace"),
            ) from None
    if text.startswith("\ufeff"):
        # one UTF-8 byte-order mark (as some editors write) is not part of the spec; dropping it
        # before lexing keeps line 1's columns counted from the first real character
        text = text[1:]
    if len(text) > MAX_SOURCE_BYTES:
        raise ParseError(f"spec text is larger than {MAX_SOURCE_BYTES} characters", filename=filename, span=Span(1, 1))
    if "\x00" in text:
        i = text.index("\x00")
        line = text.count("\n", 0, i) + 1
        col = i - (text.rfind("\n", 0, i) + 1) + 1
        raise ParseError("NUL character in spec text", filename=filename, span=Span(line, col), source=text)
    _check_nesting(text, filename)
    long_ident = _LONG_IDENT.search(text)
    if long_ident:
        i = long_ident.start()
        line = text.count("\n", 0, i) + 1
        col = i - (text.rfind("\n", 0, i) + 1) + 1
        raise ParseError(
            f"identifier longer than {MAX_IDENTIFIER} characters",
            filename=filename,
            span=Span(line, col, line, col + 1),
            source=text,
        )
    try:
        tree = _parser().parse(text)
    except UnexpectedCharacters as e:
        ch = text[e.pos_in_stream] if e.pos_in_stream is not None and e.pos_in_stream < len(text) else "?"
        raise ParseError(
            f"unexpected character {ch!r}{_describe(set(e.allowed or ()))}",
            filename=filename,
            span=Span(e.line, e.column, e.line, e.column + 1),
            source=text,
        ) from None
    except UnexpectedEOF as e:
        lines = source_lines(text) or [""]
        line = len(lines)
        col = len(lines[-1]) + 1
        raise ParseError(
            f"unexpected end of file{_unclosed_bracket(text)}{_describe(set(e.expected or ()))}",
            filename=filename,
            span=Span(line, col, line, col + 1),
            source=text,
        ) from None
    except UnexpectedToken as e:
        tok = e.token
        if tok.type == "$END":
            lines = source_lines(text) or [""]
            line, col = len(lines), len(lines[-1]) + 1
            what = "unexpected end of file" + _unclosed_bracket(text)
        else:
            line, col = tok.line, tok.column
            what = (
                f"unexpected {tok!s}"
                if tok.type in ("NAME", "SIGNED_NUMBER_LIT", "ESCAPED_STRING")
                else f"unexpected '{tok!s}'"
            )
            if str(tok) in KEYWORDS:
                what = f"unexpected keyword '{tok!s}'"
        end = col + max(1, len(str(tok))) if tok.type != "$END" else col + 1
        raise ParseError(
            f"{what}{_describe(set(e.expected or ()))}",
            filename=filename,
            span=Span(line, col, line, end),
            source=text,
        ) from None
    except UnexpectedInput as e:  # pragma: no cover - other lark errors
        raise ParseError(
            f"syntax error: {e}",
            filename=filename,
            span=Span(getattr(e, "line", 0), getattr(e, "column", 0)),
            source=text,
        ) from None
    except RecursionError:
        raise ParseError("spec text is nested too deeply", filename=filename, span=Span(1, 1), source=text) from None
    try:
        spec = SyntaxBuilder().transform(tree)
    except VisitError as e:  # pragma: no cover - the builder does not validate; kept as a guard
        raise ParseError(
            f"cannot read the spec: {e.orig_exc}", filename=filename, span=Span(1, 1), source=text
        ) from None
    except RecursionError:
        raise ParseError("spec text is nested too deeply", filename=filename, span=Span(1, 1), source=text) from None
    return spec, text
