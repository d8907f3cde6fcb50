"""Rule ``compose_positions``: runs of position-only layers (``squeeze`` and friends) composed.

Pattern: consecutive layers whose kind only rearranges entries (``moves_positions`` and not
``factor_out``: ``squeeze``), two or more in a row, or one at the very end of the top-level
chain.

Rewrite: the run is one permutation of the C·H·W entries, found by pushing an index tensor
through it once. Then
    * a permutation that is the identity (a squeeze followed by its unsqueeze) is removed;
    * a run at the end of the top-level chain is removed: the model's latent layout (one
      precomputed ``index_select`` that puts every latent back at its position of x) already
      absorbs it, so the final output needs no copy;
    * otherwise the run becomes one :class:`PositionGather` (one gather instead of one
      reshape-permute copy per layer).
Check: a trailing run inside a body chain (no latent layout there) is refused.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from flowdsl.compiler.ir import Node
from flowdsl.compiler.kinds import get_layer
from flowdsl.compiler.passes.fusion import ChainContext, FusionRule, fused_node, register_rule
from flowdsl.runtime.bijector import Provenance
from flowdsl.runtime.fusion.ops.kernels import InferenceModule

__all__ = ["PositionGather", "ComposePositions", "is_position_move"]


def is_position_move(node: Node) -> bool:
    kind = get_layer(node.kind) if node.role == "layer" else None
    return bool(kind is not None and kind.moves_positions and not kind.factor_out and not node.body_chains)


class PositionGather(InferenceModule):
    """y = x.flatten()[index] reshaped to ``out_shape``; log-det 0. Buffers ``index``, ``inv_index``."""

    moves_positions = True
    _logdet_buffers = ()

    def __init__(self, index: Tensor, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.n = math.prod(in_shape)
        self.register_buffer("index", index.long())
        self.register_buffer("inv_index", torch.argsort(index.long()))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = x.reshape(-1, self.n).index_select(1, self.index).reshape(-1, *self.out_shape)
        return y, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y.reshape(-1, self.n).index_select(1, self.inv_index).reshape(-1, *self.in_shape)

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.inverse(y), y.new_zeros(y.shape[0])


def _composed_index(modules: list[Any], in_shape: tuple[int, ...]) -> tuple[Tensor, tuple[int, ...]]:
    n = math.prod(in_shape)
    idx = torch.arange(n, dtype=torch.float64).reshape(1, *in_shape)
    with torch.no_grad():
        for m in modules:
            idx = m(idx)[0]
    return idx.reshape(-1).round().long(), tuple(idx.shape[1:])


@register_rule
class ComposePositions(FusionRule):
    name = "compose_positions"
    summary = "position-only layers composed into one gather, cancelled, or absorbed by the latent layout"
    order = 10

    def match(self, nodes: Sequence[Node], i: int, ctx: ChainContext) -> int:
        n = 0
        while i + n < len(nodes) and is_position_move(nodes[i + n]):
            n += 1
        if n >= 2 or (n == 1 and nodes[i].id == ctx.last_id):
            return n
        return 0

    def check(self, nodes: Sequence[Node], ctx: ChainContext) -> str | None:
        if nodes[-1].id == ctx.last_id and not ctx.top_level and len(nodes) == 1:
            return "at the end of a body chain there is no latent layout to absorb it"
        return None

    def _trailing(self, nodes: Sequence[Node], ctx: ChainContext) -> bool:
        return ctx.top_level and nodes[-1].id == ctx.last_id

    def rewrite(self, modules: list[Any], nodes: Sequence[Node], ctx: ChainContext) -> list[Any]:
        if self._trailing(nodes, ctx):
            return []
        index, out_shape = _composed_index(modules, tuple(nodes[0].in_shape))
        if out_shape == tuple(nodes[0].in_shape) and torch.equal(index, torch.arange(index.numel())):
            return []
        ref = next((b for m in modules for b in m.buffers()), None)
        g = PositionGather(index, tuple(nodes[0].in_shape), out_shape)
        g.provenance = Provenance(nodes[0].id, nodes[0].span.line)
        return [g.to(ref.device) if ref is not None else g]

    def fused_nodes(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> list[Node]:
        if self._trailing(nodes, ctx) or (modules is not None and not modules):
            return []
        return [fused_node(nodes, "position_gather", self.name, node_id="+".join(nd.id for nd in nodes))]

    def detail(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> str:
        if self._trailing(nodes, ctx):
            return "absorbed by the latent layout (the final index_select already places every entry)"
        if modules is not None and not modules:
            return "composes to the identity (squeeze/unsqueeze pair): cancelled"
        return f"{len(nodes)} position moves -> one gather"
