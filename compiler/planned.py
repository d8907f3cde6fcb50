"""Language constructs that parse but whose implementation has not landed yet.

Each is registered as an *unavailable* kind only when no real implementation registered the
name, so the checker reports "not available yet" at the statement's location, and argument
errors are still located precisely.
"""
from __future__ import annotations

from typing import Literal, Union

from pydantic import Field

from flowdsl.compiler.registry import ArgsModel, LayerKind, PriorKind

__all__ = ["PLANNED_LAYERS", "PLANNED_PRIORS"]


class _ConvArgs(ArgsModel):
    kind: Literal["emerging", "periodic"] = "emerging"
    kernel: int = Field(default=3, ge=1)


class _ButterflyArgs(ArgsModel):
    depth: Union[Literal["auto"], int] = "auto"
    over: Literal["all", "channels", "width", "height"] = "all"


class _RgArgs(ArgsModel):
    kernel: int = Field(default=4, ge=1)
    levels: Union[Literal["auto"], int] = "auto"


class _SpikeSlabArgs(ArgsModel):
    spike: float = Field(default=0.01, gt=0)
    slab: float = Field(default=1.0, gt=0)
    weight: float = Field(default=0.5, gt=0, lt=1)
    anneal: int = Field(default=0, ge=0)


def _layer(name: str, args: type, issue: str, **attrs) -> type[LayerKind]:
    return type(f"Planned_{name}", (LayerKind,), {"name": name, "Args": args, "available": False, "available_in": issue, **attrs})


PLANNED_LAYERS = [
    _layer("conv", _ConvArgs, "the invertible-convolutions issue", spatial=True),
    _layer("butterfly", _ButterflyArgs, "the invertible-convolutions issue"),
    _layer("rg", _RgArgs, "the RG-Flow issue", spatial=True, bodies=("disentangler", "decimator")),
]

PLANNED_PRIORS = [
    type("Planned_spike_slab", (PriorKind,), {"name": "spike_slab", "Args": _SpikeSlabArgs, "available": False, "available_in": "the training issue"}),
]
