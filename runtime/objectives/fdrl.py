"""``objective fdrl(...)``: Flow-Guided Density Ratio Learning (arguments and static rules).

The checker enforces the loss/divergence pairings of the paper (``lr`` with ``kl``, ``js`` or
``logd``; ``lsif`` with ``pearson``) and that ``source=prior`` has a flow to draw from.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from flowdsl.compiler.registry import ArgsModel, ObjectiveKind, register_objective

__all__ = ["FDRLObjectiveKind", "ESTIMATORS"]

#: estimator name -> allowed arguments and their defaults
ESTIMATORS: dict[str, dict[str, int]] = {
    "resnet": {"hidden": 64, "blocks": 2},
    "convnet": {"hidden": 64, "depth": 3},
    "mlp": {"hidden": 256, "depth": 3},
}

PAIRINGS = {"lr": ("kl", "js", "logd"), "lsif": ("pearson",)}


@register_objective
class FDRLObjectiveKind(ObjectiveKind):
    name = "fdrl"
    available = False
    available_in = "the FDRL issue"
    needs_layers = False

    class Args(ArgsModel):
        loss: Literal["lr", "lsif"] = "lr"
        divergence: Literal["kl", "js", "logd", "pearson"] = "kl"
        estimator: Any = Field(default_factory=lambda: {"call": "resnet", "args": {"hidden": 64, "blocks": 2}})
        steps: int = Field(default=100, ge=1, le=100_000)
        step_size: float = Field(default=3.0, gt=0)
        noise: float = Field(default=0.01, ge=0)
        source: Literal["data_gaussian", "uniform", "prior"] = "data_gaussian"

        @field_validator("estimator", mode="before")
        @classmethod
        def _estimator(cls, v: Any) -> Any:
            if isinstance(v, str):
                v = {"call": v, "args": {}}
            if not (isinstance(v, dict) and "call" in v):
                raise ValueError("expected an estimator call such as resnet(hidden=64, blocks=2)")
            name = v["call"]
            if name not in ESTIMATORS:
                raise ValueError(f"unknown estimator '{name}'; use one of {', '.join(ESTIMATORS)}")
            allowed = ESTIMATORS[name]
            for k, val in v.get("args", {}).items():
                if k not in allowed:
                    raise ValueError(f"unknown argument '{k}' for estimator {name}; known: {', '.join(allowed)}")
                if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                    raise ValueError(f"estimator argument '{k}' must be a positive integer")
            return {"call": name, "args": {**allowed, **v.get("args", {})}}

    @classmethod
    def check(cls, args, spec, ctx):
        if args.divergence not in PAIRINGS[args.loss]:
            ok = " or ".join(PAIRINGS[args.loss])
            ctx.fail(f"divergence={args.divergence} does not go with loss={args.loss} (use {ok})", arg="divergence")
        if args.source == "prior" and not spec.layers:
            ctx.fail("source=prior needs layers in this file to draw the flow's samples from", arg="source")
