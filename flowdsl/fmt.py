"""The canonical layout of a spec file (``flowdsl fmt``); comments are kept, the result is idempotent.

    text = format_source(text, path)    # raises ParseError (a FlowDSLError) when text does not parse

(the command itself is ``flowdsl.fmt_cli``).

The grammar drops comments (``%ignore COMMENT``), so they are found by scanning the text (outside
strings, ``#`` starts a comment) and put back by position:

* a comment that follows a token on the same line is *trailing*: it stays at the end of the output
  line that ends with that token (``squeeze(factor=2)  # (1, 8, 8) -> (4, 4, 4)``);
* any other comment is *leading*: it goes on its own line, at the statement's indent, before the
  nearest following statement of the same body (or before the body's ``}``; at the end of the file
  after the flow). A comment inside a statement's header (between its arguments) is moved before
  that statement.

Layout: 4-space indent, one statement per line; ``name(arg=value, ...)`` with ``, `` between
items, no trailing comma, ``$name`` for references, numbers and strings exactly as written; a
``repeat`` or a composite layer's part whose body is a single statement that fits stays on one
line (``repeat 4 { step(hidden=64) }``); an empty body is ``{}``. Blank lines between statements
(and comments) are kept, at most one, never right after ``{`` or before ``}``. A header longer than
:data:`WIDTH` columns puts its arguments on one continuation line, or one per line with trailing
commas when that is still too long. Trailing comments on consecutive lines of the same indent are
aligned two spaces after the longest of those lines.

The formatter works on the syntax only: a spec that parses but fails the checker (an unknown
layer, a bad shape) is still formatted. ``parse(format_source(x))`` has the same syntax tree as
``parse(x)`` (tests/flowdsl/test_fmt.py checks it on a hypothesis strategy and every bundled spec).
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass

from lark import Lark, Token, Tree

from flowdsl.grammar import grammar_text
from flowdsl.parser import parse_syntax
from flowdsl.syntax import SpecFile

__all__ = ["format_source", "format_with_syntax", "WIDTH", "INDENT"]

WIDTH = 100
INDENT = 4

# outside a string, '#' starts a comment; strings cannot span lines (grammar's ESCAPED_STRING)
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*')
_BLANK_LINE = re.compile(r"\n[ \t\f\r]*\n")
_BODY_OWNERS = ("repeat_stmt", "body_part")  # bodies that may be written on one line


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    # the front end's grammar, keeping every token ('{', ',', keywords) for its position
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True, keep_all_tokens=True)


@dataclass
class _Comment:
    start: int
    end: int
    text: str
    anchor: int | None  # end offset of the token it trails on the same line; None when on a line of its own


@dataclass
class _Line:
    indent: int
    code: str
    comment: str | None = None
    standalone: bool = False  # a comment on a line of its own


def _tokens(tree: Tree | Token | None, out: list[Token]) -> list[Token]:
    if isinstance(tree, Token):
        out.append(tree)
    elif isinstance(tree, Tree):
        for c in tree.children:
            _tokens(c, out)
    return out


def _first(tree: Tree) -> Token:
    return _tokens(tree, [])[0]


def _last(tree: Tree) -> Token:
    return _tokens(tree, [])[-1]


def _trees(tree: Tree, *names: str) -> list[Tree]:
    return [c for c in tree.children if isinstance(c, Tree) and (not names or c.data in names)]


def _tok(tree: Tree, kind: str) -> list[Token]:
    return [c for c in tree.children if isinstance(c, Token) and c.type == kind]


# ---- values and argument lists ------------------------------------------------------------------


def _value(v: Tree) -> str:
    kind = v.data
    if kind in ("number", "string"):
        return str(v.children[0])
    if kind == "true":
        return "true"
    if kind == "false":
        return "false"
    if kind == "name_value":
        return str(v.children[0])
    if kind == "ref_value":
        return "$" + str(_tok(v, "NAME")[0])
    if kind == "list_value":
        return "[" + ", ".join(_value(c) for c in _trees(v)) + "]"
    if kind == "call_value":
        return str(v.children[0]) + "(" + ", ".join(_args(_trees(v, "arg_list")[0])) + ")"
    raise AssertionError(f"unknown value node {kind}")  # pragma: no cover - the grammar has no other


def _args(arg_list: Tree) -> list[str]:
    out = []
    for a in _trees(arg_list):
        if a.data == "named_arg":
            out.append(f"{a.children[0]}={_value(_trees(a)[0])}")
        elif a.data == "param":
            vals = _trees(a)
            out.append(f"{a.children[0]}={_value(vals[0])}" if vals else str(a.children[0]))
        else:  # positional_arg
            out.append(_value(_trees(a)[0]))
    return out


def _call(head: str, arg_list: Tree | None) -> tuple[str, list[str] | None]:
    return head, (None if arg_list is None else _args(arg_list))


def _one_line(head: str, args: list[str] | None, suffix: str = "") -> str:
    return head + ("" if args is None else "(" + ", ".join(args) + ")") + suffix


# ---- statements ---------------------------------------------------------------------------------


@dataclass
class _Shape:
    """A statement (or block, flow, part) as header + optional braced body."""

    head: str
    args: list[str] | None
    body: list[Tree] | None  # statements (or parts); None when the node has no braces
    lbrace: Token | None
    rbrace: Token | None


def _shape(t: Tree) -> _Shape:
    kind = t.data
    arg_lists = _trees(t, "arg_list", "param_list")
    args = _args(arg_lists[0]) if arg_lists else None
    names = [str(n) for n in _tok(t, "NAME")]
    lb = _tok(t, "LBRACE")
    rb = _tok(t, "RBRACE")
    body_of = [c for c in _trees(t) if c.data not in ("arg_list", "param_list")]
    if kind == "input_stmt":
        return _Shape("input " + names[0], args, None, None, None)
    if kind == "context_stmt":
        return _Shape("context " + names[0], args, None, None, None)
    if kind == "dequant_stmt":
        return _Shape("dequantize " + names[0], None, None, None, None)
    if kind == "prior_stmt":
        return _Shape("prior " + names[0], args, None, None, None)
    if kind == "objective_stmt":
        return _Shape("objective " + names[0], args, None, None, None)
    if kind == "train_stmt":
        return _Shape("train", args, None, None, None)
    if kind == "repeat_stmt":
        count, *body = body_of
        return _Shape("repeat " + _value(count), None, body, lb[0], rb[0])
    if kind == "call_stmt":
        lbody = _trees(t, "layer_body")
        if not lbody:
            return _Shape(names[0], args, None, None, None)
        lb_tree = lbody[0]
        return _Shape(names[0], args, _trees(lb_tree), _tok(lb_tree, "LBRACE")[0], _tok(lb_tree, "RBRACE")[0])
    if kind == "body_part":
        return _Shape(names[0], None, body_of, lb[0], rb[0])
    if kind == "block_def":
        return _Shape("block " + names[0], args, body_of, lb[0], rb[0])
    if kind == "flow_def":
        return _Shape("flow " + names[0], None, body_of, lb[0], rb[0])
    raise AssertionError(f"unknown statement node {kind}")  # pragma: no cover


def _inline(t: Tree) -> str | None:
    """The whole statement on one line, or None when it must be written over several lines."""
    s = _shape(t)
    if s.body is None:
        return _one_line(s.head, s.args)
    if not s.body:
        return _one_line(s.head, s.args, " {}")
    if t.data not in _BODY_OWNERS or len(s.body) != 1:
        return None
    inner = _inline(s.body[0])
    return None if inner is None else _one_line(s.head, s.args, " { " + inner + " }")


def _fill(pieces: list[str], first: str, first_indent: int, col: int) -> list[tuple[int, str]]:
    """``first`` followed by ``pieces`` packed greedily (separated by one space) into lines of at
    most WIDTH columns, the continuation lines starting at column ``col``."""
    out: list[tuple[int, str]] = []
    ind, cur, has_piece = first_indent, first, False
    for piece in pieces:
        if has_piece and ind + len(cur) + 1 + len(piece) > WIDTH:
            out.append((ind, cur))
            ind, cur = col, piece
        else:
            cur += (" " if has_piece else "") + piece
        has_piece = True
    out.append((ind, cur))
    return out


def _header_lines(indent: int, head: str, args: list[str] | None, suffix: str) -> list[tuple[int, str]]:
    """A header on one line; else its arguments packed after ``head(`` with the continuation
    lines aligned under the first argument; else (``head(`` ends past column WIDTH/2, or an
    argument would not fit) packed on lines indented one level deeper than the header, between
    ``head(`` and ``)`` with a trailing comma."""
    one = _one_line(head, args, suffix)
    if args is None or not args or indent + len(one) <= WIDTH:
        return [(indent, one)]
    col = indent + len(head) + 1
    if col <= WIDTH // 2 and col + max(len(a) for a in args) + len(suffix) + 2 <= WIDTH:
        pieces = [a + "," for a in args[:-1]] + [args[-1] + ")" + suffix]
        return _fill(pieces, head + "(", indent, col)
    body = _fill([a + "," for a in args], "", indent + INDENT, indent + INDENT)
    return [(indent, head + "(")] + body + [(indent, ")" + suffix)]


class _Formatter:
    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.lines: list[_Line | None] = []  # None: a blank line
        self.last_end = 0  # source offset after the last emitted token or comment
        self.fresh = True  # nothing emitted yet in the current body (no blank line here)
        starts = [t.start_pos for t in tokens]
        self.comments: list[_Comment] = []
        for m in _STRING_OR_COMMENT.finditer(text):
            if not m.group().startswith("#"):
                continue
            i = bisect.bisect_left(starts, m.start()) - 1
            anchor = None
            if i >= 0 and "\n" not in text[tokens[i].end_pos : m.start()]:
                anchor = tokens[i].end_pos
            self.comments.append(_Comment(m.start(), m.end(), m.group().rstrip(), anchor))
        self.next = 0  # index of the first comment not emitted yet

    # -- emitting --

    def _pending(self) -> _Comment | None:
        return self.comments[self.next] if self.next < len(self.comments) else None

    def _blank_before(self, start: int) -> None:
        if not self.fresh and start > self.last_end and _BLANK_LINE.search(self.text, self.last_end, start):
            if self.lines and self.lines[-1] is not None:
                self.lines.append(None)

    def _leading(self, before: int, indent: int) -> None:
        """Emit, each on its own line, the comments that start before offset ``before``."""
        c = self._pending()
        while c is not None and c.start < before:
            self._blank_before(c.start)
            self.lines.append(_Line(indent, c.text, standalone=True))
            self.last_end = max(self.last_end, c.end)
            self.fresh = False
            self.next += 1
            c = self._pending()

    def _emit(self, indent: int, code: str, last_token: Token | None) -> None:
        line = _Line(indent, code)
        self.lines.append(line)
        self.fresh = False
        if last_token is None:
            return
        self.last_end = max(self.last_end, last_token.end_pos)
        c = self._pending()
        if c is not None and c.anchor == last_token.end_pos:
            line.comment = c.text
            self.last_end = max(self.last_end, c.end)
            self.next += 1

    def stmt(self, t: Tree, indent: int) -> None:
        first, last = _first(t), _last(t)
        self._leading(first.start_pos, indent)
        self._blank_before(first.start_pos)
        s = _shape(t)
        c = self._pending()
        no_comment_inside = c is None or c.start >= last.end_pos
        if t.data in _BODY_OWNERS and no_comment_inside:
            one = _inline(t)
            if one is not None and indent + len(one) <= WIDTH:
                self._emit(indent, one, last)
                return
        if s.body is None:
            self._leading(last.end_pos, indent)  # comments inside the header go before it
            header = _header_lines(indent, s.head, s.args, "")
            for ind, code in header[:-1]:
                self._emit(ind, code, None)
            self._emit(header[-1][0], header[-1][1], last)
            return
        assert s.lbrace is not None and s.rbrace is not None
        self._leading(s.lbrace.start_pos, indent)
        c = self._pending()
        if not s.body and (c is None or c.start > s.rbrace.start_pos):
            header = _header_lines(indent, s.head, s.args, " {}")
            for ind, code in header[:-1]:
                self._emit(ind, code, None)
            self._emit(header[-1][0], header[-1][1], s.rbrace)
            return
        header = _header_lines(indent, s.head, s.args, " {")
        for ind, code in header[:-1]:
            self._emit(ind, code, None)
        self._emit(header[-1][0], header[-1][1], s.lbrace)
        self.fresh = True
        for child in s.body:
            self.stmt(child, indent + INDENT)
        self._leading(s.rbrace.start_pos, indent + INDENT)
        self._emit(indent, "}", s.rbrace)

    def file(self, tree: Tree) -> str:
        for item in _trees(tree):
            self.stmt(item, 0)
        self._leading(len(self.text) + 1, 0)
        return _render(self.lines)


def _render(lines: list[_Line | None]) -> str:
    while lines and lines[-1] is None:
        lines.pop()
    # align the trailing comments of runs of consecutive code lines with the same indent
    col: dict[int, int] = {}
    run: list[int] = []

    def close() -> None:
        commented = [i for i in run if lines[i].comment is not None]
        if len(commented) >= 2:
            width = max(lines[i].indent + len(lines[i].code) for i in commented) + 2
            for i in commented:
                col[i] = width
        run.clear()

    for i, ln in enumerate(lines):
        if ln is None or ln.standalone or (run and lines[run[0]].indent != ln.indent):
            close()
        if ln is not None and not ln.standalone:
            run.append(i)
    close()
    out = []
    for i, ln in enumerate(lines):
        if ln is None:
            out.append("")
            continue
        code = " " * ln.indent + ln.code
        if ln.comment is not None:
            code = code.ljust(col.get(i, len(code) + 2)) + ln.comment
        out.append(code)
    return "\n".join(out) + "\n"


def format_source(text: str, path: str = "<string>") -> str:
    """The canonical layout of spec ``text`` (see the module docstring).

    Raises:
        ParseError: ``text`` does not follow the grammar (located in ``path``).
    """
    return format_with_syntax(text, path)[1]


def format_with_syntax(text: str, path: str = "<string>") -> tuple[SpecFile, str]:
    """:func:`format_source`, also returning the syntax tree of ``text`` (``parse_syntax``'s)."""
    spec, text = parse_syntax(text, path)  # the front end's checks and errors, BOM dropped
    tree = _parser().parse(text)
    return spec, _Formatter(text, _tokens(tree, [])).file(tree)
