"""Rule ``freeze``: every other layer with weights is replaced by its ``frozen()`` form.

Pattern: one layer that no earlier rule rewrote, has parameters, and is not composite (a
composite layer is rebuilt around its fused bodies instead, see ``runtime/fusion/fuse.py``). The
rewrite is the kind's own inference form (``Bijector.frozen()``): weight-only quantities such
as W⁻¹, spectra and their inverses, dense butterfly matrices or block inverses computed once in
float64 and stored in the module dtype. When the kind declares an input-independent log-det
(``LayerKind.constant_logdet``), that constant is also computed once here, in float64, and the
frozen module is wrapped in :class:`ConstantLogdet`, which returns it (in float32 for 16-bit
inputs) instead of the layer's own per-call value, from ``forward`` and from the one-pass
``inverse_with_log_det`` alike. Layers without weights (``squeeze``,
``split``) are already in inference form and are left alone.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from flowdsl.compiler.ir import Node
from flowdsl.compiler.kinds import get_layer
from flowdsl.compiler.passes.fusion import ChainContext, FusionRule, fused_node, register_rule
from flowdsl.runtime.fusion.ops.kernels import InferenceModule, const_logdet

__all__ = ["Freeze", "ConstantLogdet"]


class ConstantLogdet(InferenceModule):
    """A frozen layer whose constant log-det was computed once in float64 (buffer ``logdet``)."""

    def __init__(self, inner: nn.Module, logdet: Tensor) -> None:
        super().__init__()
        self.inner = inner
        dtype = next((t.dtype for t in inner.buffers() if t.is_floating_point()), torch.float32)
        self.register_buffer("logdet", logdet.to(dtype))
        self.provenance = inner.provenance

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.inner(x)[0], const_logdet(self.logdet, x)

    def inverse(self, y: Tensor) -> Tensor:
        return self.inner.inverse(y)

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """One pass: the inner inverse and the precomputed constant (as ``forward`` returns it)."""
        return self.inner.inverse(y), const_logdet(self.logdet, y)


def _constant_logdet(module: nn.Module, shape: tuple[int, ...]) -> Tensor:
    dev = next((t.device for t in module.buffers()), torch.device("cpu"))
    m = copy.deepcopy(module).to(torch.float64).eval()
    with torch.no_grad():
        return m(torch.zeros(1, *shape, dtype=torch.float64, device=dev))[1][0]


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
        out = modules[0].frozen().eval()
        kind = get_layer(nodes[0].kind)
        if kind is not None and kind.constant_logdet and not kind.moves_positions and not kind.factor_out:
            out = ConstantLogdet(out, _constant_logdet(out, tuple(nodes[0].in_shape))).eval()
        return [out]

    def fused_nodes(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> list[Node]:
        nd = fused_node(nodes, nodes[0].kind, self.name, node_id=nodes[0].id)
        nd.args = nodes[0].args
        return [nd]

    def detail(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> str:
        kind = get_layer(nodes[0].kind)
        extra = "; constant log-det precomputed (float64)" if kind is not None and kind.constant_logdet else ""
        if modules is not None and modules[0] is not None:
            inner = getattr(modules[0], "inner", modules[0])
            return f"{nodes[0].kind} -> {type(inner).__name__}: {self.summary}{extra}"
        return f"{nodes[0].kind}: {self.summary}{extra}"
