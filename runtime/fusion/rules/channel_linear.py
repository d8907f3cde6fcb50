"""Rule ``merge_channel_linear``: a run of channel-linear layers becomes one map.

Pattern: a maximal run of layers that act as y = A·x + b on the channels of every position
(``channel_map.is_channel_linear``): ``actnorm``, ``conv1x1`` (any parametrisation),
``permute``, ``butterfly(over=channels)`` (and over=all on vectors), ``conv(kernel=1)``.
A single such layer matches too (it is re-emitted with W⁻¹ and −W⁻¹b precomputed, prepacked
weights on the CPU fast path, and a float32 log-det under 16-bit casts).

Check: merging must not densify a cheap map — the merged cost (C² multiply-adds per position if
any member is dense, else C) must not exceed the members' total (a butterfly over 4096
channels stays factored, for instance). At rewrite time the maps are read in float64 from the
training parameters; a module that turns out not to be channel-linear, or a merged matrix that
is singular to float64 precision, is refused with the reason.

Rewrite (float64, one cast at the end):
    actnorm (s, t) then W        W' = W·diag(s),     b' = W·t            (folded forwards)
    W then actnorm (s, t)        W' = diag(s)·W,     b' = s ⊙ b + t     (folded backwards)
    W₁ then W₂                   W = W₂W₁,           b = W₂b₁ + b₂
    permutation π                a monomial matrix, folded into the neighbouring weights
    log|det| = H·W·log|det W'|,  W'⁻¹ and −W'⁻¹b' precomputed
Runs of actnorms and permutations only stay monomial (gather + one multiply-add); a run that
composes to the identity (e.g. two reversals) is removed.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from flowdsl.compiler.ir import Node
from flowdsl.compiler.passes.fusion import ChainContext, FusionRule, fused_node, register_rule
from flowdsl.runtime.bijector import Provenance
from flowdsl.runtime.fusion.ops.channel_map import (
    DENSE_KINDS,
    ChannelMap,
    channel_map_of,
    is_channel_linear,
    member_cost,
)
from flowdsl.runtime.fusion.ops.channel_ops import ChannelDense, emit

__all__ = ["MergeChannelLinear", "module_dtype"]


def module_dtype(modules: Sequence[torch.nn.Module]) -> torch.dtype:
    """The floating dtype of the first parameter or buffer among ``modules`` (default float32)."""
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            if t.is_floating_point():
                return t.dtype
    return torch.float32


@register_rule
class MergeChannelLinear(FusionRule):
    name = "merge_channel_linear"
    summary = "channel-linear layers merged into one map (W, W⁻¹, log|det| precomputed in float64)"
    order = 20

    def match(self, nodes: Sequence[Node], i: int, ctx: ChainContext) -> int:
        n = 0
        while i + n < len(nodes) and is_channel_linear(nodes[i + n]):
            n += 1
        return n

    def check(self, nodes: Sequence[Node], ctx: ChainContext) -> str | None:
        c = nodes[0].in_shape[0]
        dense = any(nd.kind in DENSE_KINDS for nd in nodes)
        merged = c * c if dense else c
        total = sum(member_cost(nd) for nd in nodes)
        if merged > total:
            return f"merging would densify the map: {merged:,} multiply-adds per position instead of {total:,}"
        return None

    def rewrite(self, modules: list[Any], nodes: Sequence[Node], ctx: ChainContext) -> list[Any]:
        cmap: ChannelMap | None = None
        for m, nd in zip(modules, nodes):
            part = channel_map_of(m, nd)
            cmap = part if cmap is None else cmap.then(part)
        assert cmap is not None
        cmap.check_invertible("+".join(nd.id for nd in nodes))
        out = emit(cmap, tuple(nodes[0].in_shape), module_dtype(modules))
        for o in out:
            o.provenance = Provenance(nodes[0].id, nodes[0].span.line)
        return out

    def fused_nodes(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> list[Node]:
        if modules is not None and not modules:
            return []
        dense = any(nd.kind in DENSE_KINDS for nd in nodes) if modules is None else isinstance(modules[0], ChannelDense)
        kind = "channel_dense" if dense else "channel_monomial"
        node_id = "+".join(nd.id for nd in nodes) if len(nodes) > 1 else nodes[0].id
        return [fused_node(nodes, kind, self.name, node_id=node_id)]

    def detail(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> str:
        c = nodes[0].in_shape[0]
        if modules is not None and not modules:
            return "composes to the identity: removed"
        kinds = [nd.kind for nd in nodes]
        dense = any(k in DENSE_KINDS for k in kinds)
        what = (
            f"dense {c}×{c} W, W⁻¹" if dense else f"monomial map (gather + scale) on {c} channel{'s' if c > 1 else ''}"
        )
        if len(nodes) == 1:
            return f"{kinds[0]} re-emitted: {what}, constant log-det"
        notes = []
        if "actnorm" in kinds and dense:
            notes.append("actnorm folded into the weights")
        if "permute" in kinds and dense:
            notes.append("permutation folded into the weights")
        if kinds.count("conv1x1") + kinds.count("butterfly") + kinds.count("conv") > 1:
            notes.append("matrices multiplied")
        return f"{len(nodes)} layers -> one {what}" + (f" ({'; '.join(notes)})" if notes else "")
