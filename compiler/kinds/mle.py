"""``objective mle``: maximum likelihood; the loss is −log p(x) reported in bits per dimension."""

from __future__ import annotations

from flowdsl.compiler.registry import ArgsModel, ObjectiveKind, register_objective

__all__ = ["MLEObjectiveKind"]


@register_objective
class MLEObjectiveKind(ObjectiveKind):
    name = "mle"

    class Args(ArgsModel):
        pass
