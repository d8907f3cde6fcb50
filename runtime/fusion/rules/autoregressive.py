"""Rule ``autoregressive_inference``: the inference form of an ``autoregressive`` layer.

Pattern: one ``autoregressive`` layer. Check: its module must be the ``Autoregressive`` of
``runtime/layers/autoregressive.py`` (anything else is refused).

Rewrite (weight-only, exact up to rounding):
    * the MADE masks are multiplied into the weights once (W ⊙ M stored as buffers), so no call
      multiplies a mask, and the sequential steps' weights are stored in step order (W₁'s columns
      for the rank-1 updates, the output rows of each step's entry), so no call reorders them;
    * the affine log-scale 2·tanh(r/2) is computed as 4·σ(r) − 2 (the same function; one sigmoid
      is cheaper than a tanh on the CPU, as in ``coupling_inference``);
    * the log-det is summed in float32 for 16-bit inputs.
Both evaluation schemes (the parallel pass and the sequential steps) are the functions of
``runtime/layers/_made.py`` and ``runtime/layers/autoregressive.py`` that the layer itself runs, so
the fused form equals the layer to rounding; the steps are a static unroll (no graph break under
``torch.compile(fullgraph=True)``, and ONNX export unrolls them).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from flowdsl.compiler.ir import Node
from flowdsl.compiler.passes.fusion import ChainContext, FusionRule, Refused, fused_node, register_rule
from flowdsl.runtime.context import ContextValue
from flowdsl.runtime.fusion.ops.kernels import InferenceModule, acc_dtype
from flowdsl.runtime.layers._made import MadeWeights
from flowdsl.runtime.layers.autoregressive import ElementMap, ar_forward, ar_inverse, context_input

__all__ = ["InferenceAutoregressive", "AutoregressiveInference", "sigmoid_log_scale"]


def sigmoid_log_scale(r: Tensor) -> Tensor:
    """log s = 2·tanh(r/2) = 4·σ(r) − 2, shape of ``r``."""
    return torch.sigmoid(r) * 4.0 - 2.0


def _buffer(t: Tensor) -> Tensor:
    return t.detach().clone().contiguous()


class InferenceAutoregressive(InferenceModule):
    """Inference form of ``Autoregressive`` (masked weights precomputed; see the module docstring)."""

    _logdet_buffers = ()

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        self.shape = tuple(src.shape)
        self.kind, self.direction = src.kind, src.direction
        self.bins, self.bound = src.bins, src.bound
        self.uses_context = src.uses_context
        made = src.made
        self.plan = list(made.plan)
        self.per_entry = made.per_entry
        with torch.no_grad():
            w = made.weights()
            self.register_buffer("w1", _buffer(w.w1))
            self.register_buffer("w1_steps", _buffer(w.w1_steps))
            self.register_buffer("wo_steps", _buffer(w.wo_steps))
            self.register_buffer("bo_steps", _buffer(w.bo_steps))
            self.register_buffer("b1", _buffer(w.b1))
            self.register_buffer("wc", None if w.wc is None else _buffer(w.wc))
            for i, (wl, bl) in enumerate(w.hidden):
                self.register_buffer(f"wh{i}", _buffer(wl))
                self.register_buffer(f"bh{i}", _buffer(bl))
            self.n_hidden = len(w.hidden)
            self.register_buffer("wo", _buffer(w.wo))
            self.register_buffer("bo", _buffer(w.bo))
        self.g = ElementMap(self.kind, self.bins, self.bound, sigmoid_log_scale)

    def _weights(self) -> MadeWeights:
        return MadeWeights(
            w1=self.w1,
            b1=self.b1,
            wc=self.wc,
            hidden=[(getattr(self, f"wh{i}"), getattr(self, f"bh{i}")) for i in range(self.n_hidden)],
            wo=self.wo,
            bo=self.bo,
            per_entry=self.per_entry,
            w1_steps=self.w1_steps,
            wo_steps=self.wo_steps,
            bo_steps=self.bo_steps,
        )

    def _ctx(self, context: ContextValue | None, x: Tensor) -> Tensor | None:
        return context_input(context, self.shape, x.dtype) if self.uses_context else None

    def forward(self, x: Tensor, context: ContextValue | None = None) -> tuple[Tensor, Tensor]:
        acc = acc_dtype(x.dtype)
        return ar_forward(x, self._weights(), self.plan, self.g, self.direction, acc, self._ctx(context, x))

    def inverse(self, y: Tensor, context: ContextValue | None = None) -> Tensor:
        acc = acc_dtype(y.dtype)
        return ar_inverse(y, self._weights(), self.plan, self.g, self.direction, acc, self._ctx(context, y))[0]

    def inverse_with_log_det(self, y: Tensor, context: ContextValue | None = None) -> tuple[Tensor, Tensor]:
        acc = acc_dtype(y.dtype)
        return ar_inverse(y, self._weights(), self.plan, self.g, self.direction, acc, self._ctx(context, y), True)


@register_rule
class AutoregressiveInference(FusionRule):
    name = "autoregressive_inference"
    summary = "autoregressive inference form: MADE masks folded into the weights; log s = 4σ(r) − 2"
    order = 31

    def match(self, nodes: Sequence[Node], i: int, ctx: ChainContext) -> int:
        nd = nodes[i]
        return 1 if nd.role == "layer" and nd.kind == "autoregressive" and "rule" not in nd.meta else 0

    def rewrite(self, modules: list[Any], nodes: Sequence[Node], ctx: ChainContext) -> list[Any]:
        from flowdsl.runtime.layers.autoregressive import Autoregressive

        src = modules[0]
        if not isinstance(src, Autoregressive):
            raise Refused(f"module is a {type(src).__name__}, not the Autoregressive this rule knows")
        out = InferenceAutoregressive(src)
        out.provenance = src.provenance
        return [out]

    def fused_nodes(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> list[Node]:
        nd = fused_node(nodes, "autoregressive", self.name, node_id=nodes[0].id)
        nd.args = nodes[0].args
        return [nd]

    def detail(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> str:
        args = nodes[0].args
        d = nodes[0].in_shape[0] if nodes[0].in_shape else 0
        slow = "inverse" if args.direction == "forward" else "forward"
        parts = ["MADE masks folded into the weights"]
        if args.kind == "affine":
            parts.append("log s = 4σ(r) − 2 (one sigmoid, no tanh)")
        else:
            parts.append("rational-quadratic spline (bin search by comparisons and sums)")
        parts.append(f"{slow}: {d} sequential steps on the hidden units each step needs")
        if getattr(args, "context", None) is True:
            parts.append("context embedding read by the first layer (unmasked)")
        return "; ".join(parts)
