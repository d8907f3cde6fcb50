"""``actnorm``: per-channel affine normalisation with data-dependent initialisation (Glow).

Shapes: x (B, C, H, W) or (B, D); parameters ``log_scale`` and ``bias`` of shape (C,) / (D,).

    forward   y = x · exp(s) + b                     (s, b broadcast over H, W)
    inverse   x = (y − b) · exp(−s)
    log-det   log|det J| = H·W·Σ_c s_c               (D-vectors: Σ_d s_d)
    inverse_with_log_det   the inverse and that constant (one pass, as every layer here)

On the first forward in training mode (and only then) s and b are set from the batch so that y
has zero mean and unit variance per channel; the flag is a buffer, so a loaded checkpoint is
never re-initialised.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowdsl.runtime.bijector import Bijector
from flowdsl.runtime.layers.lowering import lowering

__all__ = ["ActNorm", "ChannelAffine"]


class ActNorm(Bijector):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)
        c = shape[0]
        self.log_scale = nn.Parameter(torch.zeros(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))
        self._init_checked = False

    def _view(self, t: Tensor) -> Tensor:
        return t.view(-1, *([1] * (len(self.shape) - 1)))

    @torch.no_grad()
    def _data_init(self, x: Tensor) -> None:
        dims = [0] + list(range(2, x.dim()))
        n = x.numel() // x.shape[1]
        mean = x.mean(dim=dims)
        self.bias.data.copy_((-mean).to(self.bias.dtype))
        if n >= 2:
            std = x.std(dim=dims).clamp_min(1e-6)
            log_s = -torch.log(std)
            self.log_scale.data.copy_(log_s.to(self.log_scale.dtype))
            self.bias.data.copy_((-mean * torch.exp(log_s)).to(self.bias.dtype))
        self.initialized.fill_(1)

    def _maybe_init(self, x: Tensor) -> None:
        if self.training and not self._init_checked:
            if not bool(self.initialized):
                self._data_init(x.detach())
            self._init_checked = True

    def _load_from_state_dict(self, *args, **kwargs):  # a loaded flag is checked again
        self._init_checked = False
        return super()._load_from_state_dict(*args, **kwargs)

    def _logdet(self, x: Tensor) -> Tensor:
        """H·W·Σ_c s_c as (B,) in x's dtype (input-independent)."""
        spatial = 1
        for d in self.shape[1:]:
            spatial *= d
        logdet = (self.log_scale.sum() * spatial).to(x.dtype).reshape(1).expand(x.shape[0])
        return logdet

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._maybe_init(x)
        s = self._view(self.log_scale)
        y = x * torch.exp(s) + self._view(self.bias)
        return y, self._logdet(x)

    def inverse(self, y: Tensor) -> Tensor:
        return (y - self._view(self.bias)) * torch.exp(-self._view(self.log_scale))

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """One pass: the inverse and the constant forward log-det H·W·Σ s."""
        return self.inverse(y), self._logdet(y)

    def _frozen(self) -> "ChannelAffine":
        spatial = 1
        for d in self.shape[1:]:
            spatial *= d
        with torch.no_grad():
            s64 = self.log_scale.detach().double()
            out = ChannelAffine(
                torch.exp(s64), self.bias.detach().double(), spatial, len(self.shape), self.log_scale.dtype
            )
        return out


class ChannelAffine(Bijector):
    """Frozen per-channel affine y = a·x + b with a constant log-det (inference form of actnorm).

    Buffers ``scale`` (a), ``bias`` (b) of shape (C,), ``logdet`` = H·W·Σ log|a| (float64, cast)."""

    def __init__(self, scale: Tensor, bias: Tensor, spatial: int, rank: int, dtype: torch.dtype) -> None:
        super().__init__()
        view = (-1,) + (1,) * (rank - 1)
        self.register_buffer("scale", scale.to(torch.float64).reshape(view).to(dtype))
        self.register_buffer("bias", bias.to(torch.float64).reshape(view).to(dtype))
        self.register_buffer("inv_scale", (1.0 / scale.to(torch.float64)).reshape(view).to(dtype))
        self.register_buffer("logdet", (torch.log(torch.abs(scale.to(torch.float64))).sum() * spatial).to(dtype))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x * self.scale + self.bias, self.logdet.to(x.dtype).reshape(1).expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return (y - self.bias) * self.inv_scale

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.inverse(y), self.logdet.to(y.dtype).reshape(1).expand(y.shape[0])


@lowering("actnorm")
def lower_actnorm(args, shape, bodies=None):
    return ActNorm(shape)
