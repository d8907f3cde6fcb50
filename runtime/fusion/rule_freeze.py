"""Rule ``freeze``: every other layer with weights is replaced by its ``frozen()`` form.

Pattern: one layer that no earlier rule rewrote, has parameters, and is not composite (a
composite layer is rebuilt around its fused bodies instead, see ``runtime/fuse.py``). The
rewrite is the kind's own inference form (``Bijector.frozen()``): weight-only quantities such
as W⁻¹, spectra and their inverses, dense butterfly matrices or block inverses computed once in
float64 and stored in the module dtype. Layers without weights (``squeeze``, ``split``) are
already in inference form and are left alone.
"""
from __future__ import annotations

from typing import Any, Sequence

from flowdsl.compiler.ir import Node
from flowdsl.compiler.passes.fusion import ChainContext, FusionRule, fused_node, register_rule

__all__ = ["Freeze"]


@register_rule
class Freeze(FusionRule):
    name = "freeze"
    summary = "weight-only quantities precomputed by the kind's frozen() form"
    order = 90

    def match(self, nodes: Sequence[Node], i: int, ctx: ChainContext) -> int:
        nd = nodes[i]
        fresh = nd.role == "layer" and "rule" not in nd.meta and not nd.body_chains
        return 1 if fresh and (nd.n_params or 0) > 0 else 0

    def rewrite(self, modules: list[Any], nodes: Sequence[Node], ctx: ChainContext) -> list[Any]:
        out = modules[0].frozen()
        return [out.eval()]

    def fused_nodes(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> list[Node]:
        nd = fused_node(nodes, nodes[0].kind, self.name, node_id=nodes[0].id)
        nd.args = nodes[0].args
        return [nd]

    def detail(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> str:
        if modules is not None and modules[0] is not None:
            return f"{nodes[0].kind} -> {type(modules[0]).__name__}: {self.summary}"
        return f"{nodes[0].kind}: {self.summary}"
