"""``conv1x1(param=lu|qr|plain)``: invertible 1×1 convolution (Glow; QR from Emerging Convolutions).

Shapes: x (B, C, H, W) -> y (B, C, H, W); on vectors x (B, D) -> y (B, D) with a D×D matrix.

    forward   y[:, :, i, j] = W · x[:, :, i, j]
    inverse   x[:, :, i, j] = W⁻¹ · y[:, :, i, j]
    log-det   H·W·log|det W|

Parametrisations of W (C×C):
    plain  W free, initialised to a random orthogonal matrix; log|det W| by slogdet.
    lu     W = P·L·(U + diag(sign·exp(log_s))), P and sign fixed, L unit lower-triangular;
           log|det W| = Σ log_s.
    qr     W = Q·R, Q = Π_i (I − 2 v_i v_iᵀ/‖v_i‖²) (C Householder reflections),
           R = strictly-upper part + diag(exp(log_s)); log|det W| = Σ log_s.
``frozen()`` precomputes W, W⁻¹ and the log-det in float64 (see ``_linear.ChannelLinear``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowdsl.runtime.bijector import Bijector
from flowdsl.runtime.layers._linear import ChannelLinear, apply_channel_matrix
from flowdsl.runtime.layers.lowering import lowering

__all__ = ["Conv1x1", "householder_product"]


def householder_product(v: Tensor) -> Tensor:
    """Q = Π_{i} (I − 2 v_i v_iᵀ / ‖v_i‖²) for the rows v_i of ``v`` (C, C)."""
    c = v.shape[1]
    q = torch.eye(c, dtype=v.dtype, device=v.device)
    for i in range(v.shape[0]):
        vi = v[i]
        q = q - 2.0 * torch.outer(q @ vi, vi) / (vi @ vi)
    return q


class Conv1x1(Bijector):
    def __init__(self, shape: tuple[int, ...], param: str = "lu") -> None:
        super().__init__()
        c = shape[0]
        self.shape = tuple(shape)
        self.param = param
        self.spatial = math.prod(shape[1:]) if len(shape) > 1 else 1
        w0 = torch.linalg.qr(torch.randn(c, c))[0]
        if param == "plain":
            self.weight = nn.Parameter(w0)
        elif param == "lu":
            p, low, up = torch.linalg.lu(w0)
            s = torch.diagonal(up)
            self.register_buffer("perm", p)
            self.register_buffer("sign", torch.sign(s))
            self.register_buffer("lower_mask", torch.tril(torch.ones(c, c), -1))
            self.lower = nn.Parameter(low * self.lower_mask)
            self.upper = nn.Parameter(torch.triu(up, 1))
            self.log_s = nn.Parameter(torch.log(torch.abs(s)))
        elif param == "qr":
            self.register_buffer("upper_mask", torch.triu(torch.ones(c, c), 1))
            self.vectors = nn.Parameter(torch.randn(c, c))
            self.upper = nn.Parameter(torch.zeros(c, c))
            self.log_s = nn.Parameter(torch.zeros(c))
        else:  # pragma: no cover - Args restricts the values
            raise ValueError(param)

    def matrix(self) -> Tensor:
        """The current W (C, C)."""
        if self.param == "plain":
            return self.weight
        if self.param == "lu":
            c = self.log_s.shape[0]
            eye = torch.eye(c, dtype=self.log_s.dtype, device=self.log_s.device)
            low = self.lower * self.lower_mask + eye
            up = torch.triu(self.upper, 1) + torch.diag(self.sign * torch.exp(self.log_s))
            return self.perm @ low @ up
        q = householder_product(self.vectors)
        r = self.upper * self.upper_mask + torch.diag(torch.exp(self.log_s))
        return q @ r

    def log_abs_det(self) -> Tensor:
        if self.param == "plain":
            return torch.linalg.slogdet(self.weight)[1]
        return self.log_s.sum()

    def _logdet(self, x: Tensor) -> Tensor:
        """H·W·log|det W| as (B,) in x's dtype (input-independent)."""
        return (self.log_abs_det() * self.spatial).to(x.dtype).reshape(1).expand(x.shape[0])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.matrix().to(x.dtype)
        y = apply_channel_matrix(x, w)
        return y, self._logdet(x)

    def inverse(self, y: Tensor) -> Tensor:
        w = self.matrix().to(y.dtype)
        c = w.shape[0]
        flat = y.movedim(1, -1).reshape(-1, c)
        x = torch.linalg.solve(w, flat.t()).t()
        return x.reshape(y.movedim(1, -1).shape).movedim(-1, 1)

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """One pass: the solve and the constant forward log-det H·W·log|det W|."""
        return self.inverse(y), self._logdet(y)

    def _frozen(self) -> ChannelLinear:
        with torch.no_grad():
            w = self.matrix().detach()
            dtype = w.dtype
            if self.param == "lu" or self.param == "qr":
                w64 = self._matrix64()
            else:
                w64 = w.to(torch.float64)
        out = ChannelLinear(w64, None, self.spatial, dtype=dtype)
        out.warn_if_ill_conditioned(self.node_id, self.source_line)
        return out

    def _matrix64(self) -> Tensor:
        """W recomputed from the parameters in float64 (exact frozen weights)."""
        if self.param == "lu":
            c = self.log_s.shape[0]
            eye = torch.eye(c, dtype=torch.float64, device=self.log_s.device)
            low = self.lower.double() * self.lower_mask.double() + eye
            up = torch.triu(self.upper.double(), 1) + torch.diag(self.sign.double() * torch.exp(self.log_s.double()))
            return self.perm.double() @ low @ up
        q = householder_product(self.vectors.double())
        r = self.upper.double() * self.upper_mask.double() + torch.diag(torch.exp(self.log_s.double()))
        return q @ r


@lowering("conv1x1")
def lower_conv1x1(args, shape, bodies=None):
    return Conv1x1(shape, args.param)
