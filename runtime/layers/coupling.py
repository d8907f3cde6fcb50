"""``coupling``: RealNVP/Glow coupling layer (affine with a bounded scale, additive, or a
rational-quadratic spline).

Shapes: x (B, C, H, W) or (B, D) -> y of the same shape.

``mask=channel`` (one step): x = [x₁, x₂] split along channels (x₁ the first ⌊C/2⌋);
    h = NN(x₁); shift, r = halves of h; s = exp(2·tanh(r/2))   (a scale bounded in (e⁻², e²))
    forward   y₁ = x₁,  y₂ = (x₂ + shift) ⊙ s              (additive: y₂ = x₂ + shift)
    inverse   x₁ = y₁,  x₂ = y₂ ⊙ s⁻¹ − shift              (h recomputed from y₁ = x₁)
    log-det   Σ log s  over x₂'s entries                   (additive: 0)

``mask=checkerboard`` (two steps, each with its own net): m(i, j) = 1 where i + j is even
(vectors: even entries), broadcast over channels; step 1 updates the entries where m = 0 from
NN(m ⊙ x), step 2 updates the entries where m = 1 from NN((1−m) ⊙ y):
    y = m ⊙ x + (1−m) ⊙ ((x + shift) ⊙ s),  log-det Σ (1−m) ⊙ log s   (and the same with 1−m)

``kind=spline`` (Durkan et al. 2019): h = NN(x₁) gives 3K − 1 unnormalised values per updated
entry (h viewed as (B, C₂, 3K − 1, …), moved last); y₂ = g(x₂; h) elementwise, the monotonic
rational-quadratic spline of ``_rq_spline.py`` on [−bound, bound] with identity tails;
inverse x₂ = g⁻¹(y₂; h); log-det Σ log g'(x₂). Checkerboard: the same two steps as above.

Nets (``_nets.py``): ``conv`` (Glow's 3×3 → 1×1 → zero 3×3), ``resnet``, ``mlp`` (flattened
input; the default and only choice on vectors). An affine or additive coupling's last layer starts
at zero, so a new one is the identity (Glow's start); a spline coupling's starts at PyTorch's
default random initialisation, as zuko's and nflows' NSF (with the zero start flowdsl's NSF trailed
zuko's by 0.03 nats/dim on breast_cancer, BENCHMARKS.md). The scale is bounded on both sides
(unlike sigmoid(r + 2), which can approach 0), so neither direction can overflow however far
training moves the parameters.

Context (conditional flows, ``context=true``): the conditioner also sees the flow's context:
its input is concatenated with ``context_features`` (``runtime/context.py``) at the layer's shape,
E = CONTEXT_EMBED extra channels for conv/resnet nets on images, E extra inputs for an mlp on
vectors and E·h·w (the feature map, flattened) for an mlp on images. The log-det formulas are
unchanged (the context only moves shift, scale and spline parameters).

``inverse_with_log_det`` is one pass: the conditioner of each step sees the same kept entries in
both directions, so the scales (spline: log g' at the solved θ) come with the inverse.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from flowdsl.compiler.kinds.coupling import CouplingKind
from flowdsl.runtime.bijector import Bijector
from flowdsl.runtime.context import ContextValue, EncodedContextInfo, context_features
from flowdsl.runtime.layers._nets import make_net
from flowdsl.runtime.layers._rq_spline import (
    spline_coupling_forward,
    spline_coupling_inverse,
    spline_coupling_inverse_with_log_det,
)
from flowdsl.runtime.layers.lowering import lowering

__all__ = ["Coupling", "CouplingMath", "context_inputs"]


def _checkerboard(shape: tuple[int, ...]) -> Tensor:
    if len(shape) == 1:
        return (torch.arange(shape[0]) % 2 == 0).to(torch.get_default_dtype())
    h, w = shape[-2], shape[-1]
    m = ((torch.arange(h).view(-1, 1) + torch.arange(w).view(1, -1)) % 2 == 0).to(torch.get_default_dtype())
    return m.expand(*shape).contiguous()


def context_inputs(shape: tuple[int, ...], net: str, width: int) -> int:
    """Inputs the context adds to a conditioner at ``shape`` with ``net`` (E, E channels or E·h·w)."""
    if len(shape) > 1 and net == "mlp":
        return width * math.prod(shape[1:])
    return width


class CouplingMath:
    """The coupling transform shared by :class:`Coupling` and its inference form.

    Subclasses provide ``_cond(i, inp, context) -> h`` (the i-th conditioner's output for the kept
    entries ``inp``), ``_split(h) -> (shift, log s | None)`` and the attributes ``affine``,
    ``is_spline``, ``mask_kind``, ``c1``, ``mask`` (checkerboard), ``bins``, ``bound``;
    ``_acc(dtype)`` is the dtype log-dets are summed in.
    """

    affine: bool
    is_spline: bool
    mask_kind: str
    c1: int
    bins: int
    bound: float

    @staticmethod
    def _acc(dtype: torch.dtype) -> torch.dtype:
        return dtype

    def _cond(self, i: int, inp: Tensor, context: ContextValue | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _split(self, h: Tensor) -> tuple[Tensor, Tensor | None]:  # pragma: no cover
        raise NotImplementedError

    def _conditioner(self, context: ContextValue | None) -> Callable[[int, Tensor], Tensor]:
        return lambda i, inp: self._cond(i, inp, context)

    @property
    def _spline_layout(self) -> tuple[str, int, Tensor | None]:
        """(mask kind, split channel c1, checkerboard mask) for the shared spline coupling."""
        if self.mask_kind == "channel":
            return self.mask_kind, self.c1, None
        return self.mask_kind, 0, self.mask

    @staticmethod
    def _sum(t: Tensor, dtype: torch.dtype) -> Tensor:
        return t.sum(dim=tuple(range(1, t.dim())), dtype=dtype)

    def _transform(self, x: Tensor, context: ContextValue | None, inverse: bool) -> tuple[Tensor, Tensor]:
        """Affine/additive coupling in either direction, with the forward log-det (one pass)."""
        acc = self._acc(x.dtype)
        if self.mask_kind == "channel":
            x1, x2 = x[:, : self.c1], x[:, self.c1 :]
            shift, logs = self._split(self._cond(0, x1, context))
            if logs is None:
                y2 = x2 - shift if inverse else x2 + shift
                return torch.cat([x1, y2], dim=1), x.new_zeros(x.shape[0], dtype=acc)
            y2 = x2 * torch.exp(-logs) - shift if inverse else (x2 + shift) * torch.exp(logs)
            return torch.cat([x1, y2], dim=1), self._sum(logs, acc)
        m = self.mask.to(x.dtype)
        steps = list(enumerate((m, 1.0 - m)))
        y, logdet = x, x.new_zeros(x.shape[0], dtype=acc)
        for i, keep in reversed(steps) if inverse else steps:
            shift, logs = self._split(self._cond(i, y * keep, context))
            free = 1.0 - keep
            if logs is None:
                y = y - free * shift if inverse else y + free * shift
                continue
            moved = y * torch.exp(-logs) - shift if inverse else (y + shift) * torch.exp(logs)
            y = keep * y + free * moved
            logdet = logdet + self._sum(free * logs, acc)
        return y, logdet

    def _forward(self, x: Tensor, context: ContextValue | None) -> tuple[Tensor, Tensor]:
        if self.is_spline:
            cond = self._conditioner(context)
            return spline_coupling_forward(x, cond, *self._spline_layout, self.bins, self.bound, self._acc(x.dtype))
        return self._transform(x, context, inverse=False)

    def _inverse(self, y: Tensor, context: ContextValue | None) -> Tensor:
        if self.is_spline:
            return spline_coupling_inverse(y, self._conditioner(context), *self._spline_layout, self.bins, self.bound)
        return self._transform(y, context, inverse=True)[0]

    def _inverse_with_log_det(self, y: Tensor, context: ContextValue | None) -> tuple[Tensor, Tensor]:
        if self.is_spline:
            cond = self._conditioner(context)
            layout = self._spline_layout
            return spline_coupling_inverse_with_log_det(y, cond, *layout, self.bins, self.bound, self._acc(y.dtype))
        return self._transform(y, context, inverse=True)

    # the bijector protocol (``context`` only when ``uses_context``)
    def forward(self, x: Tensor, context: ContextValue | None = None) -> tuple[Tensor, Tensor]:
        return self._forward(x, context)

    def inverse(self, y: Tensor, context: ContextValue | None = None) -> Tensor:
        return self._inverse(y, context)

    def inverse_with_log_det(self, y: Tensor, context: ContextValue | None = None) -> tuple[Tensor, Tensor]:
        return self._inverse_with_log_det(y, context)


class Coupling(CouplingMath, Bijector):
    """The ``coupling`` module (see the module docstring); ``context`` (an
    :class:`EncodedContextInfo`) makes the conditioners read the flow's context."""

    def __init__(
        self,
        shape: tuple[int, ...],
        kind: str,
        hidden: int,
        net: str,
        depth: int,
        mask: str,
        bins: int = 8,
        bound: float = 3.0,
        context: EncodedContextInfo | None = None,
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.affine = kind == "affine"
        self.is_spline = kind == "spline"
        self.bins, self.bound = int(bins), float(bound)
        self.net_kind = net
        self.mask_kind = mask
        mult = 3 * self.bins - 1 if self.is_spline else (2 if self.affine else 1)
        c = shape[0]
        rest = math.prod(shape[1:]) if len(shape) > 1 else 1
        self.spatial = tuple(shape[1:])
        self.uses_context = context is not None
        self.context_kind = context.kind if context is not None else None
        extra = context_inputs(self.shape, net, context.width) if context is not None else 0
        if mask == "channel":
            self.c1 = c // 2
            c2 = c - self.c1
            n_in, n_out = (self.c1 * rest, c2 * rest * mult) if net == "mlp" else (self.c1, c2 * mult)
            self.n_x = [n_in]
            self.nets = nn.ModuleList([make_net(net, n_in + extra, n_out, hidden, depth, not self.is_spline)])
            self.out_channels = [c2 * mult]
        else:
            self.c1 = 0
            n_in, n_out = (c * rest, c * rest * mult) if net == "mlp" else (c, c * mult)
            self.n_x = [n_in, n_in]
            zero = not self.is_spline
            self.nets = nn.ModuleList([make_net(net, n_in + extra, n_out, hidden, depth, zero) for _ in range(2)])
            self.out_channels = [c * mult, c * mult]
            self.register_buffer("mask", _checkerboard(shape))

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
            if context is not None:
                flat = torch.cat([flat, self._context_input(context, inp).to(flat.dtype)], dim=1)
            return net(flat).reshape(-1, self.out_channels[i], *self.spatial)
        if context is not None:
            inp = torch.cat([inp, self._context_input(context, inp).to(inp.dtype)], dim=1)
        return net(inp)

    def _split(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self.affine:
            return h, None
        shift, raw = h.chunk(2, dim=1)
        return shift, 2.0 * torch.tanh(0.5 * raw)


@lowering("coupling")
def lower_coupling(args, shape, bodies=None, context: EncodedContextInfo | None = None):
    net = CouplingKind.resolved_net(args, shape)
    bins, bound = CouplingKind.spline(args)
    return Coupling(shape, args.kind, args.hidden, net, args.depth, args.mask, bins, bound, context=context)
