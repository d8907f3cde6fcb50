"""``objective fdrl(...)``: Flow-Guided Density Ratio Learning, language side (arguments and rules).

The runtime (estimators, losses, sampler, sources, training, evaluation, export) lives in
``flowdsl.runtime.objectives.fdrl``.

Rules the checker enforces, each at the argument that breaks it:

* the loss/divergence pairings of the paper: ``lr`` with ``kl``, ``js`` or ``logd``;
  ``lsif`` with ``pearson`` (the written default ``divergence=kl`` therefore needs
  ``divergence=pearson`` next to ``loss=lsif``; the message says so);
* ``source=prior`` needs layers in the file (the flow whose samples are refined);
* estimators on vector inputs: ``resnet`` and ``convnet`` are convolutional and need an image
  input; on ``input vector`` they are rejected at the ``estimator`` argument. When no estimator
  is written the default follows the input, as ``coupling(net=...)`` does: ``resnet(hidden=64,
  blocks=2)`` on images, ``mlp(hidden=256, depth=3)`` on vectors (:func:`resolve_args`). ``mlp``
  also works on images (it sees the flattened pixels);
* ``source=data_gaussian`` stores a D×D covariance and its Cholesky factor: the estimate
  (:func:`covariance_bytes`) must fit ``FLOWDSL_FDRL_MAX_COVARIANCE_BYTES`` (default 2 GiB), else
  the source argument is rejected with the estimate and the alternatives.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator

from flowdsl.compiler.registry import ArgsModel, ObjectiveKind, register_objective
from flowdsl.errors import ArgumentValueError, did_you_mean, show_value

__all__ = [
    "FDRLObjectiveKind",
    "ESTIMATORS",
    "CONV_ESTIMATORS",
    "PAIRINGS",
    "resolve_args",
    "covariance_bytes",
    "max_covariance_bytes",
    "DEFAULT_MAX_COVARIANCE_BYTES",
]

#: estimator name -> allowed arguments and their defaults
ESTIMATORS: dict[str, dict[str, int]] = {
    "resnet": {"hidden": 64, "blocks": 2},
    "convnet": {"hidden": 64, "depth": 3},
    "mlp": {"hidden": 256, "depth": 3},
}
#: estimators that need an image input (C, H, W)
CONV_ESTIMATORS = ("resnet", "convnet")

PAIRINGS = {"lr": ("kl", "js", "logd"), "lsif": ("pearson",)}

DEFAULT_MAX_COVARIANCE_BYTES = 2 * 1024**3


def max_covariance_bytes() -> int:
    """The limit on the ``data_gaussian`` source's memory (``FLOWDSL_FDRL_MAX_COVARIANCE_BYTES``)."""
    try:
        return int(os.environ.get("FLOWDSL_FDRL_MAX_COVARIANCE_BYTES", DEFAULT_MAX_COVARIANCE_BYTES))
    except ValueError:
        return DEFAULT_MAX_COVARIANCE_BYTES


def covariance_bytes(dims: int) -> int:
    """Peak bytes of fitting the ``data_gaussian`` source for D = ``dims`` dimensions.

    The covariance is accumulated in float64 (D²·8 bytes), factorised by Cholesky (another D²·8)
    and kept as a float32 factor (D²·4): 20·D² bytes in all.
    """
    return 20 * int(dims) * int(dims)


@register_objective
class FDRLObjectiveKind(ObjectiveKind):
    name = "fdrl"
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
                hint = did_you_mean(name, ESTIMATORS)
                known = "" if hint else f"; use one of {', '.join(ESTIMATORS)}"
                raise ArgumentValueError(f"unknown estimator '{name}'{hint}{known}", ("name",))
            allowed = ESTIMATORS[name]
            for k, val in v.get("args", {}).items():
                if k not in allowed:
                    hint = did_you_mean(k, allowed)
                    known = "" if hint else f"; known: {', '.join(allowed)}"
                    raise ArgumentValueError(f"unknown argument '{k}' for estimator {name}{hint}{known}", ("arg", k))
                if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                    raise ArgumentValueError(
                        f"estimator argument '{k}' of {name} must be a positive integer, got {show_value(val)}",
                        ("value", k),
                    )
            return {"call": name, "args": {**allowed, **v.get("args", {})}}

    @classmethod
    def check(cls, args, spec, ctx):
        written = set(spec.objective.arg_spans)
        if args.divergence not in PAIRINGS[args.loss]:
            ok = " or ".join(PAIRINGS[args.loss])
            if "divergence" in written or "loss" not in written:
                ctx.fail(f"divergence={args.divergence} does not go with loss={args.loss} (use {ok})", arg="divergence")
            ctx.fail(
                f"loss={args.loss} does not go with the default divergence={args.divergence}; write divergence={ok}",
                arg="loss",
            )
        if args.source == "prior" and not spec.layers:
            ctx.fail("source=prior needs layers in this file to draw the flow's samples from", arg="source")
        vector = getattr(spec.input, "kind", "image") == "vector"
        est = args.estimator["call"]
        if vector and est in CONV_ESTIMATORS and "estimator" in written:
            ctx.fail(
                f"estimator {est} is convolutional and needs an image input; this input is a vector "
                f"of dimension {spec.input.shape[0]} (use mlp(hidden=..., depth=...))",
                arg="estimator",
            )
        if args.source == "data_gaussian":
            dims = 1
            for d in spec.input.shape:
                dims *= int(d)
            need, limit = covariance_bytes(dims), max_covariance_bytes()
            if need > limit:
                ctx.fail(
                    f"source=data_gaussian fits a full {dims}×{dims} covariance: about {need / 1024**3:.1f} GiB, "
                    "above the "
                    f"limit of {limit / 1024**3:.1f} GiB (FLOWDSL_FDRL_MAX_COVARIANCE_BYTES); "
                    "use source=uniform or source=prior",
                    arg="source",
                )


def resolve_args(spec: Any) -> "FDRLObjectiveKind.Args":
    """The effective arguments of a spec's ``objective fdrl``, with input-dependent defaults.

    The only input-dependent default is the estimator: ``mlp(hidden=256, depth=3)`` on vector
    inputs when none is written (``resnet(hidden=64, blocks=2)`` on images).
    """
    obj = spec.objective
    if obj.name != "fdrl":
        raise ValueError(f"spec {getattr(spec, 'name', '?')!r} has objective {obj.name!r}, not fdrl")
    if spec.input.kind == "vector" and "estimator" not in obj.arg_spans:
        return obj.args.model_copy(update={"estimator": {"call": "mlp", "args": dict(ESTIMATORS["mlp"])}})
    return obj.args
