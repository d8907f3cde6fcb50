"""Rule ``autoregressive_inference``: the inference form of an ``autoregressive`` layer.

Pattern: one ``autoregressive`` layer. Check: its module must be the ``Autoregressive`` of
``runtime/layers/autoregressive.py`` (anything else is refused).

Rewrite (weight-only, exact up to rounding; the module is ``InferenceAutoregressive`` of
``runtime/layers/autoregressive.py``, which is also the layer's ``frozen()`` form):
    * the MADE masks are multiplied into the weights once (W ⊙ M stored as buffers), so no call
      multiplies a mask, and the sequential steps' weights are stored in step order (W₁'s columns
      for the rank-1 updates, the output rows of each step's entry), so no call reorders them;
    * the affine output layer's rows are stored parameter-major (all shifts, then all log-scales),
      so each parameter's (B, D) slice is contiguous and the compiled elementwise map vectorises;
    * the affine log-scale is the layer's soft clip r/(1 + |r|/B) (``soft_log_scale``: one abs,
      one multiply-add and one division, no transcendental);
    * the log-det is summed in float32 for 16-bit inputs.
Both evaluation schemes (the parallel pass and the sequential steps) are the functions of
``runtime/layers/_made.py`` and ``runtime/layers/autoregressive.py`` that the layer itself runs, so
the fused form equals the layer to rounding; the steps are a static unroll (no graph break under
``torch.compile(fullgraph=True)``, and ONNX export unrolls them).

Context: with a label context the MADE's first-layer context part is constant per class, so it is
folded into a per-class table, as ``coupling_inference`` does for mlp conditioners:
W₁x + W_c·e_k + b₁ = W₁x + T[k], T[k] = W_c·e_k + b₁ (K × H, computed once in float64 from the
frozen embedding table e, which ``FlowModel.fuse`` hands over as the plain attribute
``label_embedding``); the raw labels index T. Vector/image contexts vary per example and are kept
as the first layer's (unmasked) extra inputs.
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
    summary = "autoregressive inference form: MADE masks folded into the weights"
    order = 31

    def match(self, nodes: Sequence[Node], i: int, ctx: ChainContext) -> int:
        nd = nodes[i]
        return 1 if nd.role == "layer" and nd.kind == "autoregressive" and "rule" not in nd.meta else 0

    def rewrite(self, modules: list[Any], nodes: Sequence[Node], ctx: ChainContext) -> list[Any]:
        src = modules[0]
        if not isinstance(src, Autoregressive):
            raise Refused(f"module is a {type(src).__name__}, not the Autoregressive this rule knows")
        out = InferenceAutoregressive(src, label_embedding=src.__dict__.get("label_embedding"))
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
            parts.append("log s = r/(1 + |r|/ln 1000) (soft clip)")
        else:
            parts.append("rational-quadratic spline (bin search by comparisons and sums)")
        parts.append(f"{slow}: {d} sequential steps on the hidden units each step needs")
        if getattr(args, "context", None) is True:
            parts.append(_context_detail(ctx, modules))
        return "; ".join(parts)


def _context_detail(ctx: ChainContext, modules: list[Any] | None) -> str:
    """The fusion-report words on a conditional autoregressive layer's context path."""
    mod = modules[0] if modules else None
    if getattr(mod, "folded", False):
        return (
            f"label context folded: first layer's context part W_c·e_k + b₁ -> a per-class table "
            f"({mod.classes}×{mod.hidden}; raw labels index it)"
        )
    kind = getattr(getattr(ctx.graph, "context", None), "kind", None)
    if kind == "label" and mod is None:
        return "label context folded: first layer's context part W_c·e_k + b₁ -> a per-class table"
    return f"{kind or 'the'} context embedding read by the first layer (unmasked; varies per example, nothing to fold)"
