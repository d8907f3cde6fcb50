"""Pass ``build_graph``: FlowSpec -> FlowGraph with one node per top-level bijector instance.

Shapes are not known yet (``infer_shapes`` fills them and instantiates the bodies of composite
kinds, whose shapes depend on the input). Nodes hold the layer spec's validated ``Args`` model
as it is (validated once, by ``expand``).
"""

from __future__ import annotations

from flowdsl.compiler.ir import FlowGraph, Node
from flowdsl.compiler.kinds import get_layer
from flowdsl.compiler.passes.diagnostics import Diagnostics
from flowdsl.schema import FlowSpec, LayerSpec

__all__ = ["build_graph", "layer_node"]


def layer_node(
    layer: LayerSpec,
    node_id: str | None = None,
    parent: str | None = None,
    body_label: str | None = None,
    file_context: bool = False,
) -> Node:
    """The IR node for one layer spec (``file_context``: whether the file declares a context)."""
    kind = get_layer(layer.kind)
    assert kind is not None, layer.kind
    return Node(
        id=node_id or layer.id,
        role="layer",
        kind=layer.kind,
        args=layer.args,
        span=layer.span,
        arg_spans=dict(layer.arg_spans),
        parent=parent,
        body_label=body_label,
        via=layer.via,
        meta={"spec": layer, "logdet_constant": kind.constant_logdet, "file_context": file_context},
    )


def build_graph(spec: FlowSpec, diag: Diagnostics | None = None) -> FlowGraph:
    graph = FlowGraph(spec, warnings=diag.warnings if diag is not None else None)
    graph.add(Node(id="x", role="input", kind="input", out_shape=tuple(spec.input.shape), span=spec.input.span))
    prev = "x"
    n_latents = 0
    for layer in spec.layers:
        node = graph.add(layer_node(layer, file_context=spec.context is not None))
        graph.link(prev, node.id)
        graph.chain.append(node.id)
        prev = node.id
        kind = get_layer(layer.kind)
        if kind is not None and kind.factor_out:
            lat = graph.add(Node(id=f"z{n_latents}", role="latent", kind="latent", meta={"latent_index": n_latents}))
            graph.link(node.id, lat.id, port="latent")
            graph.latents.append(lat.id)
            n_latents += 1
    final = graph.add(
        Node(id=f"z{n_latents}", role="latent", kind="latent", meta={"latent_index": n_latents, "final": True})
    )
    graph.link(prev, final.id)
    graph.latents.append(final.id)
    graph.passes_run.append("build_graph")
    return graph
