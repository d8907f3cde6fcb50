"""Density-ratio estimators r(x) ≈ q(x)/p(x): ``resnet``, ``convnet`` and ``mlp``.

Every estimator maps a batch (B, *shape) to one scalar per example (B,). What the scalar means
follows the loss (the output head):

* ``lr``   — the raw output is **log r** (unconstrained; the logistic loss and f′ use it through
  log-sigmoid / softplus, never through exp);
* ``lsif`` — the output is **r = softplus(o)** (positive, as a ratio must be).

Architectures (all without normalisation layers, so an example's output never depends on the
rest of its batch — the sampler's per-particle gradients rely on that):

``resnet(hidden, blocks)``
    the paper's ResNet discriminator scaled down: 3×3 conv (C → hidden), then ``blocks``
    pre-activation residual blocks x + conv(φ(conv(φ(x)))) with φ = LeakyReLU(0.2) and two
    3×3 convs, a 2×2 average pooling after each block but the last while the side stays ≥ 4,
    then φ, global average pooling and a dense layer to 1.
``convnet(hidden, depth)``
    ``depth`` 3×3 convs with LeakyReLU(0.2): the first keeps the resolution, each further one
    halves it (stride 2) while the side is ≥ 4; then the feature map is flattened into a dense
    layer to 1 (keeps where things are, which suits small images such as the 8×8 digits).
``mlp(hidden, depth)``
    the flattened input through ``depth`` dense layers of width ``hidden`` with SiLU, then a
    dense layer to 1. SiLU (smooth) rather than LeakyReLU: on 2-D toys a piecewise-linear log r
    has a piecewise-constant gradient field, and particles move visibly better on a smooth one.

Conv estimators need an image input; the checker rejects them on vectors
(:mod:`flowdsl.compiler.kinds.fdrl`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Estimator", "ResBlock", "build_estimator", "HEADS"]

#: loss -> what the estimator outputs
HEADS = {"lr": "log_r", "lsif": "r"}


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2)


class ResBlock(nn.Module):
    """Pre-activation BasicBlock without BatchNorm: x + conv(φ(conv(φ(x)))), φ = LeakyReLU(0.2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.leaky_relu(x, 0.2))
        h = self.conv2(F.leaky_relu(h, 0.2))
        return x + h


class _ResNet(nn.Module):
    def __init__(self, shape: tuple[int, ...], hidden: int, blocks: int) -> None:
        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = [nn.Conv2d(c, hidden, 3, padding=1)]
        side = min(h, w)
        for i in range(blocks):
            layers.append(ResBlock(hidden))
            if i < blocks - 1 and side >= 8:
                layers.append(nn.AvgPool2d(2))
                side //= 2
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.body(x), 0.2)
        return self.out(h.mean(dim=(2, 3))).squeeze(-1)


class _ConvNet(nn.Module):
    def __init__(self, shape: tuple[int, ...], hidden: int, depth: int) -> None:
        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = []
        cin = c
        for i in range(depth):
            stride = 2 if i > 0 and min(h, w) >= 4 else 1
            layers += [nn.Conv2d(cin, hidden, 3, stride=stride, padding=1), _lrelu()]
            if stride == 2:
                h, w = (h + 1) // 2, (w + 1) // 2
            cin = hidden
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden * h * w, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x).flatten(1)).squeeze(-1)


class _MLP(nn.Module):
    def __init__(self, shape: tuple[int, ...], hidden: int, depth: int) -> None:
        super().__init__()
        d = math.prod(shape)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(d if i == 0 else hidden, hidden), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden if depth else d, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(x.flatten(1))).squeeze(-1)


_BODIES = {"resnet": _ResNet, "convnet": _ConvNet, "mlp": _MLP}


class Estimator(nn.Module):
    """r(x): ``forward`` gives the head's output (log r for ``lr``, r for ``lsif``), shape (B,).

    ``log_ratio(x)`` and ``ratio(x)`` convert for either head.
    """

    def __init__(self, name: str, shape: tuple[int, ...], loss: str, **kw: int) -> None:
        super().__init__()
        if name not in _BODIES:
            raise ValueError(f"unknown estimator {name!r}")
        if name != "mlp" and len(shape) != 3:
            raise ValueError(f"estimator {name} needs an image input (C, H, W), got shape {shape}")
        self.name = name
        self.loss = loss
        self.head = HEADS[loss]
        self.input_shape = tuple(int(d) for d in shape)
        self.net = _BODIES[name](self.input_shape, **kw)

    def forward(self, x: Tensor) -> Tensor:
        o = self.net(x)
        return F.softplus(o) if self.head == "r" else o

    def log_ratio(self, x: Tensor) -> Tensor:
        o = self(x)
        return o if self.head == "log_r" else torch.log(o)

    def ratio(self, x: Tensor) -> Tensor:
        o = self(x)
        return o if self.head == "r" else torch.exp(o)

    def extra_repr(self) -> str:
        return f"{self.name}, input {self.input_shape}, head {self.head}"


def build_estimator(estimator: dict[str, Any], shape: tuple[int, ...], loss: str) -> Estimator:
    """An :class:`Estimator` from the objective's ``estimator`` value ``{"call", "args"}``."""
    return Estimator(estimator["call"], tuple(shape), loss, **dict(estimator.get("args", {})))
