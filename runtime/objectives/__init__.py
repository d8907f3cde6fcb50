"""Objective runtimes: how each objective trains a spec and samples a run.

One module per objective registers its runtime with ``@objective_runtime("name")``
(:mod:`flowdsl.runtime.objectives.registry`); the built-in ones are imported here explicitly:

    mle   maximum likelihood (delegates to flowdsl.runtime.training)
    fdrl  a density-ratio estimator and its particle sampler (flowdsl.runtime.objectives.fdrl)

:func:`train` and :func:`sample` dispatch by the objective of a spec or a run.
"""

from __future__ import annotations

from flowdsl.runtime.objectives import mle  # noqa: F401  (each import registers a runtime)
from flowdsl.runtime.objectives.fdrl import objective as _fdrl_objective  # noqa: F401
from flowdsl.runtime.objectives.registry import (
    ObjectiveRuntime,
    get_objective_runtime,
    objective_runtime,
    objective_runtimes,
    run_objective,
    sample,
    train,
    unregister_objective_runtime,
)

__all__ = [
    "ObjectiveRuntime",
    "objective_runtime",
    "unregister_objective_runtime",
    "get_objective_runtime",
    "objective_runtimes",
    "run_objective",
    "train",
    "sample",
]
