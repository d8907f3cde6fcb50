"""Back end: checked FlowGraph -> :class:`FlowModel` (PyTorch modules, one per bijector node)."""
from __future__ import annotations

from typing import Any

import torch

from flowdsl.compiler.ir import FlowGraph, Node
from flowdsl.compiler.registry import get_layer, get_prior
from flowdsl.runtime.bijector import Bijector, Chain
from flowdsl.runtime.model import FlowModel

__all__ = ["build_model", "build_node"]


def build_node(graph: FlowGraph, node: Node) -> Bijector:
    """The module of one layer node (bodies of composite kinds built recursively)."""
    kind = get_layer(node.kind)
    bodies = None
    if kind.bodies:
        bodies = {label: Chain([build_node(graph, graph.node(c)) for c in chain]) for label, chain in node.body_chains.items()}
    module = kind.build(node.args, node.in_shape, bodies)
    module.node_id = node.id
    module.source_line = node.span.line
    if kind.moves_positions and not kind.factor_out:
        module.moves_positions = True
    return module


def build_model(spec: Any, graph: FlowGraph, seed: int | None = None) -> FlowModel:
    """Instantiate every node; parameters are initialised from ``seed`` (default: the spec's)."""
    seed = spec.train.seed if seed is None else seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        steps = [build_node(graph, graph.node(nid)) for nid in graph.chain]
        pk = get_prior(spec.prior.name)
        prior = pk.build(pk.Args.model_validate(spec.prior.args, strict=False), tuple(spec.input.shape))
    return FlowModel(spec, steps, prior, list(graph.chain))
