"""Pass ``check``: graph-level rules once every node has its shapes.

* the prior and the objective accept this flow (their ``check``; a flow with a context needs an
  objective that trains conditional flows, ``ObjectiveKind.supports_context``);
* the whole model fits the resource limits: total parameters, and the activation memory of
  one training step at the spec's batch size (estimated from the shapes, before allocation).
"""

from __future__ import annotations

import math

from flowdsl.compiler.ir import FlowGraph
from flowdsl.compiler.kinds import get_layer, get_objective, get_prior
from flowdsl.compiler.limits import LIMITS
from flowdsl.compiler.passes.diagnostics import Diagnostics
from flowdsl.compiler.registry import CheckContext
from flowdsl.errors import ResourceLimitError

__all__ = ["check", "estimate_activation_bytes", "check_run_sizes"]


def _ctx(diag: Diagnostics, what: str, span, arg_spans, context=None) -> CheckContext:
    def fail(message: str, arg: str | None = None) -> None:
        diag.fail(f"{what}: {message}", arg_spans.get(arg, span) if arg else span)

    def warn(message: str, arg: str | None = None) -> None:
        diag.warn(f"{what}: {message}", arg_spans.get(arg, span) if arg else span)

    return CheckContext(fail, warn, context=context)


def estimate_activation_bytes(graph: FlowGraph, batch: int) -> int:
    """Bytes of float32 activations kept for the backward pass of one training step."""
    total = 0
    for node in graph.layers():
        if node.in_shape is not None:
            total += int(get_layer(node.kind).activation_numel(node.args, node.in_shape))
    return 4 * batch * total


def check(graph: FlowGraph, diag: Diagnostics) -> FlowGraph:
    spec = graph.spec
    shape = tuple(spec.input.shape)

    pk = get_prior(spec.prior.name)
    pctx = _ctx(diag, f"prior {spec.prior.name}", spec.prior.span, spec.prior.arg_spans, spec.context)
    pk.check(spec.prior.args, shape, pctx)

    ok = get_objective(spec.objective.name)
    if ok is None:  # pragma: no cover - expand rejects unknown objectives
        diag.fail(f"unknown objective '{spec.objective.name}'", spec.objective.span)
    octx = _ctx(diag, f"objective {spec.objective.name}", spec.objective.span, spec.objective.arg_spans, spec.context)
    if spec.context is not None and not ok.supports_context:
        diag.fail(
            f"objective {spec.objective.name} does not train conditional flows, but the flow declares "
            f"context {spec.context.describe()} (line {spec.context.span.line}); use objective mle",
            spec.objective.span,
        )
    ok.check(spec.objective.args, spec, octx)

    total = graph.model_params()  # bijectors, prior and context encoder, as the compiled model has them
    if total > LIMITS.max_params:
        worst = max(graph.layers(), key=lambda n: n.n_params or 0, default=None)
        candidates = [] if worst is None else [(worst.n_params or 0, "the largest layer", worst.span)]
        candidates.append((graph.prior_params(), "the prior", spec.prior.span))
        if graph.context is not None:
            candidates.append((graph.context_params(), "the context encoder", graph.context.span))
        what, where, span = max(candidates, key=lambda c: c[0])  # the first of equals
        diag.fail(
            f"the flow has {total:,} parameters, above the limit of {LIMITS.max_params:,} (FLOWDSL_MAX_PARAMS); "
            f"{where} is here with {what:,}",
            span,
            ResourceLimitError,
        )
    spans = getattr(spec.train, "arg_spans", {}) or {}
    for field in ("batch", "test_batch"):
        value = getattr(spec.train, field, None)
        if isinstance(value, int) and value > LIMITS.max_batch:
            diag.fail(
                f"train({field}={value:,}) is above the limit of {LIMITS.max_batch:,} (FLOWDSL_MAX_BATCH)",
                spans.get(field, spec.train.span),
                ResourceLimitError,
            )
    act = estimate_activation_bytes(graph, spec.train.batch)
    if act > LIMITS.max_activation_bytes:
        worst = max(graph.layers(), key=lambda n: math.prod(n.in_shape or (0,)))
        diag.fail(
            f"a training step at batch {spec.train.batch} needs about {act / 1024**3:.1f} GiB of activations, "
            "above the limit of "
            f"{LIMITS.max_activation_bytes / 1024**3:.1f} GiB (FLOWDSL_MAX_ACTIVATION_BYTES)",
            worst.span,
            ResourceLimitError,
        )
    graph.passes_run.append("check")
    return graph


def check_run_sizes(
    graph: FlowGraph,
    *,
    batch: int | None = None,
    test_batch: int | None = None,
    threads: int | None = None,
    filename: str = "train",
) -> None:
    """The sizes of a run given outside the spec (flags, Python keyword arguments) against the
    limits, before anything is allocated: batch sizes (``max_batch``, and the activation estimate
    of one training step at ``batch`` against ``max_activation_bytes``) and threads (``max_threads``).

    Raises:
        ResourceLimitError: naming the value, the limit and its environment variable.
    """
    problems = []
    for name, value in (("batch", batch), ("test_batch", test_batch)):
        if value is not None and value > LIMITS.max_batch:
            problems.append(f"{name} {value:,} is above the limit of {LIMITS.max_batch:,} (FLOWDSL_MAX_BATCH)")
    if threads is not None and threads > LIMITS.max_threads:
        problems.append(f"threads {threads:,} is above the limit of {LIMITS.max_threads:,} (FLOWDSL_MAX_THREADS)")
    if batch is not None and not problems:
        act = estimate_activation_bytes(graph, batch)
        if act > LIMITS.max_activation_bytes:
            problems.append(
                f"a training step at batch {batch:,} needs about {act / 1024**3:.1f} GiB of activations, above the "
                f"limit of {LIMITS.max_activation_bytes / 1024**3:.1f} GiB (FLOWDSL_MAX_ACTIVATION_BYTES)"
            )
    if problems:
        raise ResourceLimitError("; ".join(problems), filename=filename)
