"""The architecture fingerprint of a spec: a canonical form of its checked graph, and its sha256.

A checkpoint belongs to an architecture, not to a text: adding a comment, reformatting,
renaming a ``block`` or changing ``train(...)`` leaves the trained weights just as usable. The
canonical form keeps exactly what decides the model and its density:

    input        kind, shape (C, H, W) or (D,), levels
    context      (only when the file declares one) kind and shape; every layer's resolved
                 ``context`` argument is kept then, and left out of unconditional files (where it
                 is always false), so their fingerprints are those of before contexts existed
    dequantize   "uniform" | "none"
    layers       for every bijector in forward order (composite bodies nested under their body
                 label, e.g. ``level0.decimator``): kind, validated arguments with defaults filled
                 in, shape in → out, the shape of a factored-out latent
    latents      the shapes of the latent outputs, in order
    prior        name and validated arguments (spike_slab's ``anneal`` included; ``conditional`` only
                 when true)
    objective    name and validated arguments

and leaves out everything else: source text, comments, spans, node ids (they carry block and
repeat names), ``via`` (the blocks a layer was inlined through), the flow's name and the
``train(...)`` settings. :func:`canonical_text` serialises the form as JSON with sorted keys
and no whitespace; :func:`architecture_sha256` is the sha256 of that text.

Torch-free: works on the :class:`~flowdsl.compiler.ir.FlowGraph` of ``flowdsl.parse`` (which a
``FlowSpec`` holds as ``spec.graph``).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from flowdsl.compiler.ir import FlowGraph, Node
from flowdsl.compiler.registry import get_layer

__all__ = ["FORMAT", "canonical_form", "canonical_text", "architecture_sha256"]

#: the version of the canonical form; part of the hashed text, so a change of what the form
#: holds never makes two different architectures collide with fingerprints of the old form
FORMAT = "flowdsl-architecture/1"


def _plain(value: Any) -> Any:
    """Arguments as JSON values: models dumped (unset fields left out), tuples as lists, non-finite
    floats as strings."""
    if hasattr(value, "model_dump"):  # an argument left unset (None) is left out, so a kind that
        # gains an optional argument keeps the identity of every spec that does not use it
        return {str(k): _plain(v) for k, v in value.model_dump().items() if v is not None}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _shape(shape: Any) -> Any:
    return None if shape is None else [int(d) for d in shape]


def _layer_args(node: Node, conditional: bool) -> dict[str, Any]:
    """The layer's arguments with the defaults its kind resolves from the input filled in
    (``LayerKind.shown_args``: ``coupling``'s net, a spline's bins and bound), unset ones left out,
    so ``coupling(kind=spline)`` and ``coupling(kind=spline, bins=8)`` are one architecture."""
    if node.args is None:
        return {}
    kind = get_layer(node.kind)
    if kind is None:  # a kind unregistered since the graph was built: its arguments as written
        return _plain(node.args)
    shown = kind.shown_args(node.args, node.in_shape)
    return _plain({k: v for k, v in shown.items() if v is not None and (conditional or k != "context")})


def _layer(graph: FlowGraph, node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": node.kind,
        "args": _layer_args(node, graph.context is not None),
        "in": _shape(node.in_shape),
        "out": _shape(node.out_shape),
    }
    if node.latent_shape is not None:
        out["latent"] = _shape(node.latent_shape)
    if node.body_chains:
        out["bodies"] = [
            [label, [_layer(graph, graph.node(cid)) for cid in chain]] for label, chain in node.body_chains.items()
        ]
    return out


def _prior_args(args: Any) -> dict[str, Any]:
    """The prior's arguments; ``conditional=false`` (every unconditional prior) is left out, so
    priors keep the fingerprints of before the argument existed."""
    if args is None:
        return {}
    plain = _plain(args)
    if plain.get("conditional") is False:
        del plain["conditional"]
    return plain


def _graph(spec_or_graph: Any) -> FlowGraph:
    graph = spec_or_graph if isinstance(spec_or_graph, FlowGraph) else getattr(spec_or_graph, "graph", None)
    if not isinstance(graph, FlowGraph):
        raise TypeError(f"a checked FlowGraph or a parsed spec holding one is needed, not {type(spec_or_graph)!r}")
    return graph


def canonical_form(spec_or_graph: Any) -> dict[str, Any]:
    """The architecture of a checked graph (or of a parsed spec's graph) as plain JSON values.

    Raises:
        TypeError: the argument is neither a FlowGraph nor a spec holding one.
    """
    graph = _graph(spec_or_graph)
    spec = graph.spec
    inp = spec.input
    form = {
        "format": FORMAT,
        "input": {"kind": inp.kind, "shape": _shape(inp.shape), "levels": inp.levels},
        "dequantize": spec.dequantize,
        "layers": [_layer(graph, graph.node(nid)) for nid in graph.chain],
        "latents": [_shape(graph.node(lid).in_shape) for lid in graph.latents],
        "prior": {"name": spec.prior.name, "args": _prior_args(spec.prior.args)},
        "objective": {
            "name": spec.objective.name,
            "args": _plain(spec.objective.args) if spec.objective.args is not None else {},
        },
    }
    context = getattr(spec, "context", None)
    if context is not None:
        form["context"] = {"kind": context.kind, "shape": list(context.shape)}
        if context.kind == "label":
            form["context"]["classes"] = context.classes
    return form


def canonical_text(spec_or_graph: Any) -> str:
    """:func:`canonical_form` as compact JSON with sorted keys (the hashed text)."""
    return json.dumps(canonical_form(spec_or_graph), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def architecture_sha256(spec_or_graph: Any) -> str:
    """sha256 (hex) of :func:`canonical_text` of a checked graph, or of a ``FlowSpec``'s ``graph``."""
    return hashlib.sha256(canonical_text(spec_or_graph).encode("ascii")).hexdigest()
