"""Rule ``coupling_inference``: the inference form of a coupling layer.

Pattern: one ``coupling`` layer. Check: its module must be the ``Coupling`` of
``runtime/layers/coupling.py`` (read at rewrite time; anything else is refused).

Rewrite (weight-only, exact up to rounding):
    * the affine scale log s = 2·tanh(r/2) is computed as 4·σ(r) − 2 (the same function:
      tanh(u) = 2σ(2u) − 1), because PyTorch's CPU sigmoid is ~6× faster than its tanh (41 vs
      255 µs on 64×6×16×16, one thread), and the r/2 halving disappears with it;
    * ``net=conv`` and ``net=resnet`` become a ``ConvProgram`` (``conv_program.py``): on the CPU
      each convolution and its ReLU are ONE oneDNN call (weights reordered once in eager mode;
      under ``torch.compile`` the same op, which does not guard on the batch size), in
      channels-last layout; elsewhere ``F.conv2d`` + ReLU;
    * the log-det is Σ log s (summed from the very values the scale uses), accumulated in float32
      for 16-bit inputs.
``net=mlp`` keeps its PyTorch modules (a frozen copy).
Context (conditional couplings): the conditioner input is concatenated with the context features
as in the layer. With a label context and ``net=mlp`` the context part of the first Linear is
constant per class, so it is folded: W·[x, f(e_k)] + b = W_x·x + T[k] with the per-class table
T[k] = W_e·f(e_k) + b (K × hidden, computed once in float64 from the frozen embedding table e;
f repeats e_k over the h·w positions on images, so W_e's columns are summed per feature); the
folded conditioner indexes T with the raw labels and never concatenates. Conv/resnet
conditioners keep the E context channels (their zero padding makes the context's contribution
position-dependent), and vector/image contexts are not constant, so nothing is folded there.
``inverse_with_log_det`` is one pass, as in the layer (``CouplingMath``).
``kind=spline`` keeps the spline math of ``runtime/layers/_rq_spline.py`` (the same functions, so
fused equals unfused to rounding), with the frozen conditioner above; the log-det is summed in
float32 for 16-bit inputs.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowdsl.compiler.ir import Node
from flowdsl.compiler.passes.fusion import ChainContext, FusionRule, Refused, fused_node, register_rule
from flowdsl.runtime.context import ContextValue, context_features
from flowdsl.runtime.fusion.ops.conv_program import ConvProgram
from flowdsl.runtime.fusion.ops.kernels import InferenceModule, acc_dtype
from flowdsl.runtime.layers.coupling import CouplingMath

__all__ = ["InferenceCoupling", "CouplingInference", "FoldedLabelMLP"]


def _inference_net(net: nn.Module, kind: str) -> nn.Module:
    """The conditioner in inference form: a ConvProgram, or a frozen copy of an mlp."""
    if kind in ("conv", "resnet"):
        return ConvProgram(net)
    out = copy.deepcopy(net).eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def _log_scale(r: Tensor) -> Tensor:
    """log s = 2·tanh(r/2) = 4·σ(r) − 2 (see the module docstring), shape of ``r``."""
    return (torch.sigmoid(r) * 4.0).sub_(2.0)


class FoldedLabelMLP(nn.Module):
    """An mlp conditioner with its label context folded into a per-class table (module docstring):
    ``forward(flat_x (B, n_x), labels (B,)) = rest(W_x·flat_x + T[labels])``."""

    def __init__(self, net: nn.Sequential, n_x: int, embedding: Tensor, spatial: tuple[int, ...]) -> None:
        super().__init__()
        first = net[0]
        if not isinstance(first, nn.Linear):
            raise Refused(f"mlp conditioner starts with a {type(first).__name__}, not a Linear")
        w = first.weight.detach()
        w64 = w.to(torch.float64)
        we = w64[:, n_x:]
        k, e = embedding.shape
        positions = we.shape[1] // e
        we = we.reshape(w.shape[0], e, positions).sum(dim=2)  # f(e_k) repeats e_k over the positions
        bias = first.bias.detach().to(torch.float64) if first.bias is not None else 0.0
        table = embedding.detach().to(device=w.device, dtype=torch.float64) @ we.T + bias
        self.register_buffer("w_x", w[:, :n_x].clone())
        self.register_buffer("table", table.to(w.dtype))
        self.rest = nn.Sequential(*[copy.deepcopy(layer) for layer in list(net)[1:]]).eval()
        for p in self.rest.parameters():
            p.requires_grad_(False)
        self.classes, self.hidden = int(k), int(w.shape[0])

    def forward(self, flat: Tensor, labels: Tensor) -> Tensor:
        return self.rest(F.linear(flat, self.w_x.to(flat.dtype)) + self.table.to(flat.dtype).index_select(0, labels))


class InferenceCoupling(CouplingMath, InferenceModule):
    """Inference form of ``Coupling`` (same math; log s = 4σ(r) − 2, see the module docstring)."""

    _logdet_buffers = ()

    def __init__(self, src: nn.Module) -> None:
        super().__init__()
        self.affine, self.mask_kind, self.net_kind = src.affine, src.mask_kind, src.net_kind
        self.is_spline, self.bins, self.bound = src.is_spline, src.bins, src.bound
        self.shape = tuple(src.shape)
        self.spatial = tuple(src.spatial)
        self.out_channels = list(src.out_channels)
        self.n_x = list(src.n_x)
        self.c1 = getattr(src, "c1", 0)
        self.uses_context = bool(src.uses_context)
        self.context_kind = getattr(src, "context_kind", None)
        table = src.__dict__.get("label_embedding")
        #: whether the label context is folded into per-class tables (mlp conditioners)
        self.folded = bool(self.uses_context and self.context_kind == "label" and self.net_kind == "mlp")
        self.folded = self.folded and table is not None
        if self.folded:
            self.nets = nn.ModuleList(
                [FoldedLabelMLP(net, n, table, self.spatial) for net, n in zip(src.nets, self.n_x)]
            )
        else:
            self.nets = nn.ModuleList([_inference_net(net, self.net_kind) for net in src.nets])
        if self.mask_kind != "channel":
            self.register_buffer("mask", src.mask.detach().clone())

    @staticmethod
    def _acc(dtype: torch.dtype) -> torch.dtype:
        return acc_dtype(dtype)

    def _context_input(self, context: ContextValue, inp: Tensor) -> Tensor:
        # a broadcast embedding takes the input's (symbolic) size, so torch.compile(dynamic=True)
        # does not specialise the spatial sizes (nor, by duck sizing, a batch of the same size)
        shape = tuple(inp.shape[1:]) if context.embedding.dim() == 2 else self.shape
        feats = context_features(context, shape)
        return feats.reshape(feats.shape[0], -1) if self.net_kind == "mlp" else feats

    def _cond(self, i: int, inp: Tensor, context: ContextValue | None) -> Tensor:
        net = self.nets[i]
        if self.net_kind == "mlp":
            flat = inp.reshape(-1, self.n_x[i])
            if self.folded:
                h = net(flat, context.raw)
            elif context is not None:
                h = net(torch.cat([flat, self._context_input(context, inp).to(flat.dtype)], dim=1))
            else:
                h = net(flat)
            return h.reshape(-1, self.out_channels[i], *self.spatial)
        if context is not None:
            inp = torch.cat([inp, self._context_input(context, inp).to(inp.dtype)], dim=1)
        return net(inp)

    def _split(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self.affine:
            return h, None
        c2 = h.shape[1] // 2
        return h[:, :c2], _log_scale(h[:, c2:])


@register_rule
class CouplingInference(FusionRule):
    name = "coupling_inference"
    summary = "coupling inference form: log s = 4σ(r) − 2; conv+ReLU fused, weights prepacked"
    order = 30

    def match(self, nodes: Sequence[Node], i: int, ctx: ChainContext) -> int:
        return 1 if nodes[i].role == "layer" and nodes[i].kind == "coupling" and "rule" not in nodes[i].meta else 0

    def rewrite(self, modules: list[Any], nodes: Sequence[Node], ctx: ChainContext) -> list[Any]:
        from flowdsl.runtime.layers.coupling import Coupling

        src = modules[0]
        if not isinstance(src, Coupling):
            raise Refused(f"module is a {type(src).__name__}, not the Coupling this rule knows")
        out = InferenceCoupling(src)
        out.provenance = src.provenance
        return [out]

    def fused_nodes(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> list[Node]:
        nd = fused_node(nodes, "coupling", self.name, node_id=nodes[0].id)
        nd.args = nodes[0].args
        return [nd]

    def detail(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> str:
        args = nodes[0].args
        net = args.net or ("mlp" if len(nodes[0].in_shape) == 1 else "conv")
        context = _context_detail(nodes[0], ctx, modules, net)
        parts = ["log s = 4σ(r) − 2 (one sigmoid, no tanh)"] if args.kind == "affine" else []
        if args.kind == "spline":
            parts.append("rational-quadratic spline (bin search by comparisons and sums)")
        if net in ("conv", "resnet"):
            parts.append(f"net={net} as a conv program: conv+ReLU fused, weights prepacked (CPU)")
        else:
            parts.append(f"net={net} kept as PyTorch modules")
        if context:
            parts.append(context)
        return "; ".join(parts)


def _context_detail(node: Node, ctx: ChainContext, modules: list[Any] | None, net: str) -> str:
    """The fusion-report words on a conditional coupling's context path ("" when it has none)."""
    if getattr(node.args, "context", None) is not True:
        return ""
    declared = getattr(ctx.graph, "context", None)
    kind = getattr(declared, "kind", None)
    if modules is not None and modules[0] is not None:
        mod = modules[0]
        if getattr(mod, "folded", False):
            f = mod.nets[0]
            return (
                f"label context folded: first Linear's context part W_e·e_k + b -> a per-class table "
                f"({f.classes}×{f.hidden} per conditioner; raw labels index it)"
            )
    elif kind == "label" and net == "mlp":
        return "label context folded: first Linear's context part W_e·e_k + b -> a per-class table"
    if kind == "label":
        return "label context kept as E extra conditioner channels (zero padding makes it position-dependent)"
    return f"{kind or 'the'} context kept as conditioner inputs (it varies per example; nothing to fold)"
