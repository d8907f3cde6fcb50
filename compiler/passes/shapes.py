"""Pass ``infer_shapes``: input/output/latent shapes of every node, and the per-node checks.

For each layer in forward order: rejects spatial kinds on
vector data, runs the kind's shape rule (which raises located errors for divisibility and
argument ranges), checks that the layer preserves the number of dimensions, counts parameters
(the kind's formula, ``LayerKind.param_count``), and instantiates the bodies of composite kinds
(e.g. ``rg``: one body chain per level and part). A layer inside a body acts on patches; an
image context reaches it resized to the composite's image and cut into the same patches, so its
kind checks the context against the composite's height and width (``CheckContext.context_size``).
"""

from __future__ import annotations

import math

from flowdsl.compiler.ir import FlowGraph, Node
from flowdsl.compiler.kinds import get_layer
from flowdsl.compiler.limits import LIMITS
from flowdsl.compiler.passes.build import layer_node
from flowdsl.compiler.passes.diagnostics import Diagnostics
from flowdsl.compiler.registry import CheckContext
from flowdsl.errors import ResourceLimitError

__all__ = ["infer_shapes", "context_for"]


def _numel(shape) -> int:
    return math.prod(shape) if shape else 1


def context_for(node: Node, diag: Diagnostics, context=None, context_size=None) -> CheckContext:
    """A CheckContext whose failures point at ``node``'s argument (or the node itself); ``context``
    is the flow's declared context (``ContextSpec`` or None), ``context_size`` the (h, w) an image
    context is resized to for this node (see :class:`CheckContext`)."""

    def fail(message: str, arg: str | None = None) -> None:
        span = node.arg_spans.get(arg) if arg else None
        diag.fail(f"{node.kind}: {message}", span or node.span)

    def warn(message: str, arg: str | None = None) -> None:
        span = node.arg_spans.get(arg) if arg else None
        diag.warn(f"{node.kind}: {message}", span or node.span)

    return CheckContext(fail, warn, node.id, context, context_size)


def _infer_chain(
    graph: FlowGraph, diag: Diagnostics, node_ids: list[str], shape: tuple[int, ...], in_body: bool
) -> tuple[int, ...]:
    for nid in node_ids:
        node = graph.node(nid)
        kind = get_layer(node.kind)
        ctx = context_for(node, diag, graph.context, _context_size(graph, node))
        node.in_shape = shape
        if kind.spatial and len(shape) != 3:
            diag.fail(
                f"'{node.kind}' needs image data (C, H, W), but the data here are vectors of shape {_fmt(shape)}",
                node.span,
            )
        if in_body and kind.factor_out:
            diag.fail(f"'{node.kind}' cannot be used inside a body of a composite layer", node.span)
        out = tuple(kind.infer_shape(node.args, shape, ctx))
        latent = kind.latent_shape(node.args, shape, ctx) if kind.factor_out else None
        if any(d < 1 for d in out) or (latent is not None and any(d < 1 for d in latent)):
            diag.fail(f"'{node.kind}' would produce an empty tensor from {_fmt(shape)}", node.span)
        total = _numel(out) + (_numel(latent) if latent is not None else 0)
        if total != _numel(shape):
            diag.fail(
                f"'{node.kind}' changes the number of dimensions from {_numel(shape)} to {total}; "
                "every layer must preserve it",
                node.span,
            )
        node.out_shape = out
        node.latent_shape = tuple(latent) if latent is not None else None
        if kind.bodies:
            spec = node.meta["spec"]
            for inst in kind.body_instances(node.args, shape, ctx):
                chain_ids = []
                prefix = f"{spec.id}.{inst.body}."
                for child in spec.bodies.get(inst.body, []):
                    suffix = child.id[len(prefix) :] if child.id.startswith(prefix) else child.id
                    cnode = graph.add(
                        layer_node(
                            child,
                            node_id=f"{node.id}.{inst.label}.{suffix}",
                            parent=node.id,
                            body_label=inst.label,
                            file_context=graph.context is not None,
                        )
                    )
                    graph.link(chain_ids[-1] if chain_ids else node.id, cnode.id, port="out" if chain_ids else "body")
                    chain_ids.append(cnode.id)
                node.body_chains[inst.label] = chain_ids
                end = _infer_chain(graph, diag, chain_ids, tuple(inst.shape), in_body=True)
                if end != tuple(inst.shape):
                    last = graph.node(chain_ids[-1])
                    diag.fail(
                        f"the {inst.body} body must keep the shape {_fmt(inst.shape)}, but ends with {_fmt(end)}",
                        last.span,
                    )
        node.n_params = int(kind.param_count(node.args, shape))
        if node.n_params > LIMITS.max_params:
            diag.fail(
                f"'{node.kind}' alone has {node.n_params:,} parameters, above the limit of {LIMITS.max_params:,} "
                "(FLOWDSL_MAX_PARAMS)",
                node.span,
                ResourceLimitError,
            )
        shape = out
    return shape


def _context_size(graph: FlowGraph, node: Node) -> tuple[int, int] | None:
    """For a layer inside a composite's body: the (h, w) of the composite's input, where an image
    context is resized before it is cut into the patches the body acts on."""
    if node.parent is None:
        return None
    shape = graph.node(node.parent).in_shape
    return (int(shape[-2]), int(shape[-1])) if shape is not None and len(shape) == 3 else None


def _fmt(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def infer_shapes(graph: FlowGraph, diag: Diagnostics) -> FlowGraph:
    shape = graph.input_shape
    end = _infer_chain(graph, diag, list(graph.chain), shape, in_body=False)
    for lid in graph.latents:
        lat = graph.node(lid)
        if lat.meta.get("final"):
            lat.in_shape = lat.out_shape = end
        else:
            src = next(iter(graph.g.predecessors(lid)))
            lat.in_shape = lat.out_shape = graph.node(src).latent_shape
    graph.passes_run.append("infer_shapes")
    return graph
