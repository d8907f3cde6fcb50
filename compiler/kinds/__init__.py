"""The built-in kinds, imported explicitly (one module per kind; each registers itself).

    layers      actnorm conv1x1 conv butterfly coupling autoregressive permute squeeze split rg logit
    priors      gaussian laplace spike_slab gmm student_t
    objectives  mle fdrl

Adding a kind: one module here plus its line below, and its runtime module registered with
``@lowering`` (layers), ``@prior_lowering`` (priors) or ``@objective_runtime`` (objectives) in
``flowdsl.runtime`` (see the README's "Extending flowdsl").
"""

from __future__ import annotations

from flowdsl.compiler.kinds import (  # noqa: F401  (each import registers its kind)
    actnorm,
    autoregressive,
    butterfly,
    conv,
    conv1x1,
    coupling,
    fdrl,
    gaussian,
    gmm,
    laplace,
    logit,
    mle,
    permute,
    rg,
    spike_slab,
    split,
    squeeze,
    student_t,
)
from flowdsl.compiler.registry import (
    get_layer,
    get_objective,
    get_prior,
    layer_kinds,
    objective_kinds,
    prior_kinds,
)

__all__ = ["get_layer", "get_prior", "get_objective", "layer_kinds", "prior_kinds", "objective_kinds"]
