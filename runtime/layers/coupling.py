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
input; the default and only choice on vectors). The last layer starts at zero, so a new
coupling is the identity. The scale is bounded on both sides (unlike sigmoid(r + 2), which can
approach 0), so neither direction can overflow however far training moves the parameters.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowdsl.compiler.kinds.coupling import CouplingKind
from flowdsl.runtime.bijector import Bijector
from flowdsl.runtime.layers._nets import make_net
from flowdsl.runtime.layers._rq_spline import spline_coupling_forward, spline_coupling_inverse
from flowdsl.runtime.layers.lowering import lowering

__all__ = ["Coupling"]


def _checkerboard(shape: tuple[int, ...]) -> Tensor:
    if len(shape) == 1:
        return (torch.arange(shape[0]) % 2 == 0).to(torch.get_default_dtype())
    h, w = shape[-2], shape[-1]
    m = ((torch.arange(h).view(-1, 1) + torch.arange(w).view(1, -1)) % 2 == 0).to(torch.get_default_dtype())
    return m.expand(*shape).contiguous()


class Coupling(Bijector):
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
        if mask == "channel":
            self.c1 = c // 2
            c2 = c - self.c1
            n_in, n_out = (self.c1 * rest, c2 * rest * mult) if net == "mlp" else (self.c1, c2 * mult)
            self.nets = nn.ModuleList([make_net(net, n_in, n_out, hidden, depth)])
            self.out_channels = [c2 * mult]
        else:
            n_in, n_out = (c * rest, c * rest * mult) if net == "mlp" else (c, c * mult)
            self.nets = nn.ModuleList([make_net(net, n_in, n_out, hidden, depth) for _ in range(2)])
            self.out_channels = [c * mult, c * mult]
            self.register_buffer("mask", _checkerboard(shape))

    def _cond(self, i: int, inp: Tensor) -> Tensor:
        net = self.nets[i]
        if self.net_kind == "mlp":
            n_in = inp[0].numel()
            h = net(inp.reshape(-1, n_in))
            return h.reshape(-1, self.out_channels[i], *self.spatial)
        return net(inp)

    def _params(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self.affine:
            return h, None
        shift, raw = h.chunk(2, dim=1)
        return shift, 2.0 * torch.tanh(0.5 * raw)

    @property
    def _spline_layout(self) -> tuple[str, int, Tensor | None]:
        """(mask kind, split channel c1, checkerboard mask) for the shared spline coupling."""
        if self.mask_kind == "channel":
            return self.mask_kind, self.c1, None
        return self.mask_kind, 0, self.mask

    def _spline_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return spline_coupling_forward(x, self._cond, *self._spline_layout, self.bins, self.bound, x.dtype)

    def _spline_inverse(self, y: Tensor) -> Tensor:
        return spline_coupling_inverse(y, self._cond, *self._spline_layout, self.bins, self.bound)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.is_spline:
            return self._spline_forward(x)
        if self.mask_kind == "channel":
            x1, x2 = x[:, : self.c1], x[:, self.c1 :]
            shift, logs = self._params(self._cond(0, x1))
            if logs is None:
                return torch.cat([x1, x2 + shift], dim=1), x.new_zeros(x.shape[0])
            y2 = (x2 + shift) * torch.exp(logs)
            return torch.cat([x1, y2], dim=1), logs.reshape(-1, logs[0].numel()).sum(1)
        m = self.mask.to(x.dtype)
        y = x
        logdet = x.new_zeros(x.shape[0])
        for i, keep in enumerate((m, 1.0 - m)):
            shift, logs = self._params(self._cond(i, y * keep))
            if logs is None:
                y = y + (1.0 - keep) * shift
            else:
                y = keep * y + (1.0 - keep) * ((y + shift) * torch.exp(logs))
                logdet = logdet + ((1.0 - keep) * logs).reshape(-1, logs[0].numel()).sum(1)
        return y, logdet

    def inverse(self, y: Tensor) -> Tensor:
        if self.is_spline:
            return self._spline_inverse(y)
        if self.mask_kind == "channel":
            y1, y2 = y[:, : self.c1], y[:, self.c1 :]
            shift, logs = self._params(self._cond(0, y1))
            x2 = y2 - shift if logs is None else y2 * torch.exp(-logs) - shift
            return torch.cat([y1, x2], dim=1)
        m = self.mask.to(y.dtype)
        x = y
        for i, keep in reversed(list(enumerate((m, 1.0 - m)))):
            shift, logs = self._params(self._cond(i, x * keep))
            if logs is None:
                x = x - (1.0 - keep) * shift
            else:
                x = keep * x + (1.0 - keep) * (x * torch.exp(-logs) - shift)
        return x


@lowering("coupling")
def lower_coupling(args, shape, bodies=None):
    net = CouplingKind.resolved_net(args, shape)
    bins, bound = CouplingKind.spline(args)
    return Coupling(shape, args.kind, args.hidden, net, args.depth, args.mask, bins, bound)
