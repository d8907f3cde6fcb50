"""One document's analysis: the compiler's pipeline run on its text, kept per document version.

:func:`analyze` runs :func:`flowdsl.compiler.passes.run_pipeline` (the passes ``flowdsl check``
runs) and keeps what it produced: the syntax tree (when the text parses), the checked
:class:`~flowdsl.compiler.ir.FlowGraph` (when every pass passed), the error that stopped it (a
:class:`~flowdsl.errors.FlowDSLError` with its span) and the checker's warnings. The index the
editor features need (layer instances by source position, the syntax statements) is built on
first use, so a change costs one pipeline run until a hover, hint or completion asks for more.

:class:`DocumentStore` caches the analysis by (uri, version) and remembers each document's last
analysis that had a graph, which hover and navigation fall back to while the text does not parse.

Positions: spans are 1-based line and character columns; LSP positions are 0-based lines and
UTF-16 code units. :func:`to_lsp_col` / :func:`from_lsp_col` convert on one line of text.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Iterator

from flowdsl import syntax as S
from flowdsl.errors import CheckWarning, FlowDSLError, Span, source_lines

__all__ = ["Analysis", "analyze", "DocumentStore", "to_lsp_col", "from_lsp_col", "walk_statements", "StmtAt"]


def to_lsp_col(line: str, col0: int) -> int:
    """Character column ``col0`` (0-based) of ``line`` as UTF-16 code units."""
    head = line[:col0]
    if head.isascii():
        return col0
    return len(head.encode("utf-16-le")) // 2 + max(0, col0 - len(line))


def from_lsp_col(line: str, units: int) -> int:
    """UTF-16 column ``units`` of ``line`` as a character column (0-based)."""
    if line.isascii():
        return units
    n = 0
    for i, ch in enumerate(line):
        if n >= units:
            return i
        n += 2 if ord(ch) > 0xFFFF else 1
    return len(line)


@dataclass(frozen=True)
class StmtAt:
    """A statement of the syntax tree with where it sits: the block it is written in (None: the
    flow) and the repeats around it, outermost first."""

    stmt: Any
    block: S.BlockDef | None
    repeats: tuple[S.Repeat, ...] = ()


def walk_statements(tree: S.SpecFile) -> Iterator[StmtAt]:
    """Every statement of every block and of the flow, depth first (repeat and composite bodies
    included), in source order within each body."""

    def walk(body, block, repeats):
        for st in body:
            yield StmtAt(st, block, repeats)
            if isinstance(st, S.Repeat):
                yield from walk(st.body, block, repeats + (st,))
            elif isinstance(st, S.Call) and st.parts:
                for part in st.parts:
                    yield from walk(part.body, block, repeats)

    for b in tree.blocks:
        yield from walk(b.body, b, ())
    yield from walk(tree.flow.body, None, ())


@dataclass
class Analysis:
    """The result of the pipeline on one version of a document (see the module docstring)."""

    text: str
    filename: str
    version: int | None = None
    tree: S.SpecFile | None = None
    spec: Any = None
    graph: Any = None
    error: FlowDSLError | None = None
    internal: str | None = None  # an unexpected exception (a bug): shown as a diagnostic, not raised
    #: the graph as far as the passes got when a later pass (shapes, checks) failed: shapes are
    #: known up to the failing layer
    partial_graph: Any = None
    warnings: list[CheckWarning] = field(default_factory=list)

    @functools.cached_property
    def lines(self) -> list[str]:
        return source_lines(self.text) or [""]

    def line(self, i0: int) -> str:
        """Line ``i0`` (0-based) of the text, '' past the end."""
        return self.lines[i0] if 0 <= i0 < len(self.lines) else ""

    @functools.cached_property
    def instances(self) -> dict[tuple[int, int], list[Any]]:
        """Layer nodes of the graph keyed by the (line, column) of the statement that made them:
        a statement in a repeat or a block has one node per instance, in forward order. When a
        pass after ``build_graph`` failed, the nodes whose shapes it reached."""
        out: dict[tuple[int, int], list[Any]] = {}
        graph = self.graph if self.graph is not None else self.partial_graph
        if graph is None:
            return out
        for node in graph.layers():
            if node.in_shape is not None:
                out.setdefault((node.span.line, node.span.column), []).append(node)
        return out

    @functools.cached_property
    def statements(self) -> list[StmtAt]:
        return list(walk_statements(self.tree)) if self.tree is not None else []

    @functools.cached_property
    def blocks(self) -> dict[str, S.BlockDef]:
        return {b.name: b for b in self.tree.blocks} if self.tree is not None else {}

    def calls(self) -> Iterator[StmtAt]:
        return (s for s in self.statements if isinstance(s.stmt, S.Call))

    def stmt_at(self, line: int, col: int) -> StmtAt | None:
        """The innermost statement whose name (1-based ``line``, ``col``) is under the cursor,
        for calls, prior and objective statements."""
        for s in self.statements:
            st = s.stmt
            sp = st.span if isinstance(st, S.Call) else getattr(st, "name_span", None)
            if sp is not None and _inside(sp, line, col):
                return s
        return None

    def block_at(self, line: int) -> S.BlockDef | None:
        """The block whose definition covers 1-based ``line``."""
        for b in self.blocks.values():
            if b.span.line <= line <= (b.span.end_line or b.span.line):
                return b
        return None


def _inside(sp: Span, line: int, col: int) -> bool:
    """Whether 1-based (line, col) is on the one-line span ``sp`` (its end included: a cursor
    right after a name still names it)."""
    if not sp.known or sp.line != line:
        return False
    end = sp.end_column if sp.end_line == sp.line and sp.end_column > sp.column else sp.column + 1
    return sp.column <= col <= end


def analyze(text: str, filename: str = "<string>", version: int | None = None) -> Analysis:
    """Run the checker's passes on ``text``; never raises for a bad spec (see :class:`Analysis`)."""
    from flowdsl.compiler.passes import run_pipeline

    res = Analysis(text=text, filename=filename, version=version)
    seen: dict[str, Any] = {}

    def on_pass(name: str, ir: Any) -> None:
        seen[name] = ir

    try:
        res.spec, res.graph = run_pipeline(text, filename, on_pass=on_pass)
        res.warnings = list(res.graph.warnings)
    except FlowDSLError as e:
        res.error = e
    except RecursionError:
        res.internal = "the spec is nested too deeply to analyse"
    except Exception as e:  # a compiler bug must not take the editor's server down
        res.internal = f"internal error: {type(e).__name__}: {e}"
    res.tree = seen.get("parse")
    if res.graph is None:
        res.partial_graph = seen.get("build_graph")
    return res


class DocumentStore:
    """The analyses of open documents: cached by (uri, version), with each document's last
    analysis that produced a graph."""

    def __init__(self) -> None:
        self.current: dict[str, Analysis] = {}
        self.last_good: dict[str, Analysis] = {}

    def analysis(self, uri: str, text: str, filename: str, version: int | None) -> Analysis:
        cur = self.current.get(uri)
        if cur is not None and cur.version == version and version is not None and cur.text == text:
            return cur
        res = analyze(text, filename, version)
        self.current[uri] = res
        if res.graph is not None:
            self.last_good[uri] = res
        return res

    def with_tree(self, uri: str) -> Analysis | None:
        """The current analysis if its text parsed, else the last one with a graph (its tree,
        graph and text go together, so positions in it agree)."""
        cur = self.current.get(uri)
        if cur is not None and cur.tree is not None:
            return cur
        return self.last_good.get(uri)

    def close(self, uri: str) -> None:
        self.current.pop(uri, None)
        self.last_good.pop(uri, None)
