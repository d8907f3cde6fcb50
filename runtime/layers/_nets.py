"""Conditioner networks for coupling layers. The last layer of each starts at zero (``zero_last``,
Glow's start: a new affine or additive coupling is the identity) or at PyTorch's default random
initialisation (``zero_last=False``: spline couplings, as zuko's and nflows' NSF).

    conv    Glow's net: 3×3 conv → ReLU → (depth−1)×(1×1 conv → ReLU) → zero-initialised 3×3 conv
    resnet  3×3 conv → depth × residual blocks (ReLU → 3×3 conv → ReLU → 1×1 conv, added) → ReLU →
            zero-initialised 3×3 conv
    mlp     Linear → SiLU → (depth−1)×(Linear → SiLU) → zero-initialised Linear, on flattened input

All map (B, c_in, *spatial) to (B, c_out, *spatial) (mlp: (B, n_in) to (B, n_out)).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["make_net", "ConvNet", "ResNet", "MLP"]


def _last(layer: nn.Module, zero: bool) -> nn.Module:
    if zero:
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    return layer


class ConvNet(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, hidden: int, depth: int, zero_last: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(hidden, hidden, 1), nn.ReLU()]
        layers.append(_last(nn.Conv2d(hidden, c_out, 3, padding=1), zero_last))
        super().__init__(*layers)


class _ResBlock(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNet(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, hidden: int, depth: int, zero_last: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(c_in, hidden, 3, padding=1)]
        layers += [_ResBlock(hidden) for _ in range(depth)]
        layers += [nn.ReLU(), _last(nn.Conv2d(hidden, c_out, 3, padding=1), zero_last)]
        super().__init__(*layers)


class MLP(nn.Sequential):
    def __init__(self, n_in: int, n_out: int, hidden: int, depth: int, zero_last: bool = True) -> None:
        layers: list[nn.Module] = [nn.Linear(n_in, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(_last(nn.Linear(hidden, n_out), zero_last))
        super().__init__(*layers)


def make_net(net: str, n_in: int, n_out: int, hidden: int, depth: int, zero_last: bool = True) -> nn.Module:
    if net == "conv":
        return ConvNet(n_in, n_out, hidden, depth, zero_last)
    if net == "resnet":
        return ResNet(n_in, n_out, hidden, depth, zero_last)
    if net == "mlp":
        return MLP(n_in, n_out, hidden, depth, zero_last)
    raise ValueError(net)  # pragma: no cover - Args restricts the values
