"""Prior modules: one file per base distribution, each registering ``@prior_lowering("name")``.

Listed here explicitly; importing this package registers every built-in prior lowering.
"""

from __future__ import annotations

from flowdsl.runtime.priors import gaussian, gmm, laplace, spike_slab, student_t  # noqa: F401
from flowdsl.runtime.priors.base import Prior
from flowdsl.runtime.priors.lowering import (
    get_prior_lowering,
    lowered_priors,
    prior_lowering,
    unregister_prior_lowering,
)

__all__ = ["Prior", "prior_lowering", "unregister_prior_lowering", "get_prior_lowering", "lowered_priors"]
