"""``objective mle``: maximum likelihood; the loss is −log p(x) (−log p(x | c) for a conditional
flow) reported in bits per dimension."""

from __future__ import annotations

from flowdsl.compiler.registry import ArgsModel, ObjectiveKind, register_objective

__all__ = ["MLEObjectiveKind"]


@register_objective
class MLEObjectiveKind(ObjectiveKind):
    name = "mle"
    supports_context = True

    class Args(ArgsModel):
        pass
