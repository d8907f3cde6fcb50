"""``actnorm``: per-channel affine normalisation (Glow), language side.

Shapes: (C, H, W) or (D,) -> unchanged. Parameters: a log-scale and a bias per channel (2·C).
"""

from __future__ import annotations

from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer

__all__ = ["ActNormKind"]


@register_layer
class ActNormKind(LayerKind):
    name = "actnorm"
    description = "per-channel affine normalisation, data-dependent initialisation"
    constant_logdet = True

    class Args(ArgsModel):
        pass

    @classmethod
    def param_count(cls, args, shape) -> int:
        return 2 * shape[0]
