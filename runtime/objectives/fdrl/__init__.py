"""FDRL runtime: estimators, Bregman losses and f′, the particle sampler, sources, training
(``flowdsl train`` for ``objective fdrl``), sampling, a digits classifier, evaluation and ONNX
export of the estimator. See ``benchmarks/fdrl.md`` for the commands and numbers."""

from __future__ import annotations

from flowdsl.runtime.objectives.fdrl.estimators import Estimator, build_estimator
from flowdsl.runtime.objectives.fdrl.losses import bregman_loss, f_prime, lr_loss, lsif_loss
from flowdsl.runtime.objectives.fdrl.sampler import Guidance, run_flow

__all__ = ["Estimator", "build_estimator", "bregman_loss", "f_prime", "lr_loss", "lsif_loss", "Guidance", "run_flow"]
