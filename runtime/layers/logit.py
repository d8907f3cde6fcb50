"""``logit(alpha=0.05)``: the logit transform of data in [0, 1] (RealNVP's preprocessing).

Shapes: x (B, C, H, W) or (B, D) -> same shape; log-det (B,). Elementwise, no parameters.

    forward   p = α + (1 − 2α)·x,  q = 1 − p = α + (1 − 2α)·(1 − x)
              y = log p − log q
    log-det   Σ_entries [log(1 − 2α) − log p − log q]
    inverse   x = (σ(y) − α) / (1 − 2α)
    inverse_with_log_det   x and the forward log-det at that x, elementwise from x by the
              forward's own formula (one pass over the entries, no second layer call)

``q`` is computed from ``1 − x`` rather than as ``1 − p``, so neither log loses digits near
x = 1 (for α = 0, ``1 − x`` is exact for x ≥ ½). The data must lie in [0, 1]: nothing is
clamped, so an input outside [−α/(1 − 2α), 1 + α/(1 − 2α)] gives NaN (the log of a negative
number), and with α = 0 the end points 0 and 1 give ∓inf (and a log-det of +inf), as the math
says. Device and dtype follow the input (α enters as a Python scalar).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowdsl.runtime.bijector import Bijector
from flowdsl.runtime.layers.lowering import lowering

__all__ = ["Logit"]


class Logit(Bijector):
    def __init__(self, shape: tuple[int, ...], alpha: float = 0.05) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"logit: alpha must be in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)
        self.scale = 1.0 - 2.0 * self.alpha
        self.n = math.prod(shape)
        self.logdet_const = self.n * math.log(self.scale)  # Σ log(1 − 2α), a Python float

    def _logs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(log p, log q) elementwise, p = α + (1 − 2α)·x, q = α + (1 − 2α)·(1 − x)."""
        return torch.log(self.alpha + self.scale * x), torch.log(self.alpha + self.scale * (1.0 - x))

    def _logdet(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        """Σ_entries [log(1 − 2α) − log p − log q], (B,)."""
        return self.logdet_const - (log_p + log_q).flatten(1).sum(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_p, log_q = self._logs(x)
        return log_p - log_q, self._logdet(log_p, log_q)

    def inverse(self, y: Tensor) -> Tensor:
        return (torch.sigmoid(y) - self.alpha) / self.scale

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """One pass: x = (σ(y) − α)/(1 − 2α) and the forward log-det at that x, elementwise
        from x by the forward's own formula (so it equals ``forward(x)[1]`` exactly)."""
        x = self.inverse(y)
        return x, self._logdet(*self._logs(x))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


@lowering("logit")
def lower_logit(args, shape, bodies=None):
    return Logit(shape, args.alpha)
