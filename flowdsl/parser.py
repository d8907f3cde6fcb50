"""Text -> syntax tree: the LALR parser built from ``flowdsl.grammar`` with positions kept.

lark's ``UnexpectedInput`` errors become :class:`flowdsl.errors.ParseError` with the file, line,
column and a message that names what was expected in words a user knows.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import stat

from lark import Lark
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from flowdsl.compiler.limits import LIMITS
from flowdsl.errors import ParseError, Span, source_lines
from flowdsl.grammar import grammar_text
from flowdsl.syntax import SpecFile, SyntaxBuilder

__all__ = ["parse_syntax", "read_source", "KEYWORDS"]

KEYWORDS = (
    "flow block input context dequantize prior objective train repeat rg disentangler decimator true false"
).split()

MAX_SOURCE_BYTES = LIMITS.max_source_bytes  # the default; the check reads LIMITS each time
MAX_NESTING = 64
MAX_IDENTIFIER = 256
# comments and strings (an unterminated one up to the end of its line: a regex that has to fail at
# every quote would be quadratic) are matched and skipped so that a long word inside them is not taken for
# an identifier; only the third group is one
_LONG_IDENT = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"?|([A-Za-z_][A-Za-z0-9_]{%d,})' % MAX_IDENTIFIER)
# one match = one token with the blanks and comments before it (counting needs no Python loop)
_ONE_TOKEN = re.compile(
    r'(?>(?:[ \t\f\r\n]+|#[^\n]*)*)("(?:[^"\\\n]|\\.)*"?|[A-Za-z_][A-Za-z0-9_]*'
    r"|[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[^ \t\f\r\n#])"
)
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


def _check_tokens(text: str, filename: str) -> None:
    """Refuse more than ``LIMITS.max_tokens`` tokens before the parser sees any (C-speed scan)."""
    limit = LIMITS.max_tokens
    if len(text) <= limit:  # every token is at least one character
        return
    over = next(itertools.islice(_ONE_TOKEN.finditer(text), limit, None), None)
    if over is None:
        return
    i = over.start(1)
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    raise ParseError(
        f"the spec has more than {limit:,} tokens (FLOWDSL_MAX_TOKENS); this is token {limit + 1:,}",
        filename=filename,
        span=Span(line, col, line, col + len(over.group(1))),
        source=text,
    )


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
def read_source(path: str | os.PathLike) -> bytes:
    """The bytes of a spec file, read with a bound: at most ``LIMITS.max_source_bytes`` + 1 bytes
    are read (a larger file is refused without reading the rest), and only a regular file is
    opened (a FIFO would block, ``/dev/zero`` never ends, a directory is no spec).

    Raises:
        ParseError: the file is missing, unreadable, not a regular file or too large.
    """
    name = os.fspath(path)
    limit = LIMITS.max_source_bytes
    try:
        st = os.stat(name)
        if not stat.S_ISREG(st.st_mode):
            what = (
                "a directory"
                if stat.S_ISDIR(st.st_mode)
                else "a FIFO (named pipe)"
                if stat.S_ISFIFO(st.st_mode)
                else "a device"
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket"
                if stat.S_ISSOCK(st.st_mode)
                else "not a regular file"
            )
            raise ParseError(f"cannot read spec file: it is {what}, not a regular file", filename=name)
        if st.st_size > limit:
            raise ParseError(_too_large(limit, st.st_size), filename=name, span=Span(1, 1))
        with open(name, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ParseError(f"cannot read spec file: {e.strerror or e}", filename=name) from None
    except ValueError as e:  # a NUL in the path
        raise ParseError(f"cannot read spec file: {e}", filename=name.replace("\x00", "\\x00")) from None
    if len(data) > limit:  # grew since the stat
        raise ParseError(_too_large(limit), filename=name, span=Span(1, 1))
    return data


def _too_large(limit: int, size: int | None = None) -> str:
    has = f" ({size:,} bytes)" if size is not None else ""
    return f"spec file is larger than the limit of {limit:,} bytes{has} (FLOWDSL_MAX_SOURCE_BYTES)"


def _find_long_identifier(text: str) -> re.Match | None:
    for m in _LONG_IDENT.finditer(text):
        if m.group(1) is not None:
            return m
    return None


def parse_syntax(text: str | bytes, filename: str = "<string>") -> tuple[SpecFile, str]:
    """Parse spec text into a :class:`SpecFile`. Returns the tree and the decoded text.

    Raises:
        ParseError: for non-UTF-8 input or text that does not follow the grammar.
    """
    limit = LIMITS.max_source_bytes
    if isinstance(text, (bytes, bytearray, memoryview)) and len(text) > limit:  # before decoding it
        raise ParseError(_too_large(limit, len(text)), filename=filename, span=Span(1, 1))
    if isinstance(text, (bytes, bytearray, memoryview)):
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
    if not isinstance(text, str):
        raise ParseError(
            f"spec text must be str or bytes, not {type(text).__name__}", filename=filename, span=Span(1, 1)
        )
    if text.startswith("\ufeff"):
        # one UTF-8 byte-order mark (as some editors write) is not part of the spec; dropping it
        # before lexing keeps line 1's columns counted from the first real character
        text = text[1:]
    if len(text) > limit:
        raise ParseError(
            f"spec text is larger than the limit of {limit:,} characters (FLOWDSL_MAX_SOURCE_BYTES)",
            filename=filename,
            span=Span(1, 1),
        )
    if "\x00" in text:
        i = text.index("\x00")
        line = text.count("\n", 0, i) + 1
        col = i - (text.rfind("\n", 0, i) + 1) + 1
        raise ParseError("NUL character in spec text", filename=filename, span=Span(line, col), source=text)
    _check_tokens(text, filename)
    _check_nesting(text, filename)
    long_ident = _find_long_identifier(text)
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
