"""The named passes of the compiler, in order, and the pipeline that runs them.

    parse         text -> syntax tree                       (flowdsl.parser)
    expand        syntax tree -> FlowSpec                    (blocks, repeats, argument models)
    build_graph   FlowSpec -> FlowGraph                      (one node per bijector instance)
    infer_shapes  FlowGraph -> FlowGraph with shapes         (kind shape rules; body instances)
    check         FlowGraph -> FlowGraph                     (availability, priors, objectives, resources)

Each pass is a plain function that can be called alone; :func:`run_pipeline` runs them in order
and can hand the IR after each pass to a callback (``flowdsl check --explain``).
"""

from __future__ import annotations

import functools
import gc
from typing import Any, Callable

from flowdsl.compiler.ir import FlowGraph
from flowdsl.compiler.passes.build import build_graph
from flowdsl.compiler.passes.check import check
from flowdsl.compiler.passes.diagnostics import Diagnostics
from flowdsl.compiler.passes.expand import expand
from flowdsl.compiler.passes.shapes import infer_shapes
from flowdsl.parser import parse_syntax

__all__ = [
    "PASSES",
    "Diagnostics",
    "expand",
    "build_graph",
    "infer_shapes",
    "check",
    "run_pipeline",
]

PASSES = ("parse", "expand", "build_graph", "infer_shapes", "check")


def _gc_paused(fn):
    """Run ``fn`` with Python's cyclic garbage collector paused (then restored as it was).

    The passes allocate a few dozen small containers per layer (lark tree, syntax nodes, specs,
    graph nodes) that live until the pass ends and form no cycles, so reference counting frees
    them. Left on, the collector counts them as survivors, and each time these reach a quarter
    of the heap it runs a full collection over every object, the spec built so far included:
    the more layers, the more and the longer the collections (one or two of 100-250 ms at 5,000
    layers, a fifth to a third of the parse). Nothing is leaked: cycles made meanwhile are
    collected once it is back on.
    """

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()

    return run


@_gc_paused
def run_pipeline(
    text: str | bytes,
    filename: str = "<string>",
    on_pass: Callable[[str, Any], None] | None = None,
) -> tuple[Any, FlowGraph]:
    """Run every pass on spec text; returns the FlowSpec holding its checked FlowGraph, and
    that graph. The graph's own ``spec`` is the same FlowSpec without the graph, so the two make
    no reference cycle (a dropped result is freed at once, not by the cyclic collector).

    ``on_pass(name, ir)`` is called after each pass with its result.
    """
    tree, source = parse_syntax(text, filename)
    if on_pass:
        on_pass("parse", tree)
    diag = Diagnostics(filename, source)
    spec = expand(tree, diag)
    if on_pass:
        on_pass("expand", spec)
    graph = build_graph(spec, diag)
    if on_pass:
        on_pass("build_graph", graph)
    infer_shapes(graph, diag)
    if on_pass:
        on_pass("infer_shapes", graph)
    check(graph, diag)
    if on_pass:
        on_pass("check", graph)
    return spec.with_graph(graph), graph
