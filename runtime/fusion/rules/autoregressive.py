"""Rule ``autoregressive_inference``: the inference form of an ``autoregressive`` layer.

Pattern: one ``autoregressive`` layer. Check: its module must be the ``Autoregressive`` of
``runtime/layers/autoregressive.py`` (anything else is refused).

Rewrite (weight-only, exact up to rounding; the module is ``InferenceAutoregressive`` of
``runtime/layers/autoregressive.py``, which is also the layer's ``frozen()`` form):
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

from flowdsl.compiler.ir import Node
from flowdsl.compiler.passes.fusion import ChainContext, FusionRule, Refused, fused_node, register_rule
from flowdsl.runtime.layers.autoregressive import Autoregressive, InferenceAutoregressive

__all__ = ["AutoregressiveInference"]


@register_rule
class AutoregressiveInference(FusionRule):
    name = "autoregressive_inference"
    summary = "autoregressive inference form: MADE masks folded into the weights; log s = 4σ(r) − 2"
    order = 31

    def match(self, nodes: Sequence[Node], i: int, ctx: ChainContext) -> int:
        nd = nodes[i]
        return 1 if nd.role == "layer" and nd.kind == "autoregressive" and "rule" not in nd.meta else 0

    def rewrite(self, modules: list[Any], nodes: Sequence[Node], ctx: ChainContext) -> list[Any]:
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
