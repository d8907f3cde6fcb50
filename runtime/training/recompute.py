"""The ``--invertible-memory`` option of ``flowdsl train``: the loss module whose backward recomputes.

With the option on, the training loss is ``-InvertibleMemory(model).log_prob(x).mean() / D``
instead of ``-model.log_prob(x).mean() / D``: the forward pass keeps only the latents, and the
backward pass rebuilds each step's input from its output with the step's inverse before
differentiating that step alone (:mod:`flowdsl.runtime.training.memory`). The wrapper shares
the model's parameters, so the optimizer, gradient clipping, checkpoints and evaluation (which
runs the plain model under ``no_grad``) are unchanged; gradients equal ordinary backprop up to
the round-trip error of the inverses.

Data-dependent initialisation (actnorm) runs in the loop's plain no-grad forward before the
first update, as without the option.
"""

from __future__ import annotations

from torch import nn

from flowdsl.errors import NotAvailableError

__all__ = ["require_one_process", "memory_saving_model"]

_FLAG = "--invertible-memory"


def require_one_process(world: int, where: str = "train") -> None:
    """Refuse the option under DDP (``world`` > 1) with a :class:`NotAvailableError`.

    The recomputing backward hands every step's parameter gradients to autograd at once, after
    the whole chain; DDP's per-parameter gradient hooks and its search for unused parameters
    are not verified against that, so multi-process runs keep ordinary backprop.
    """
    if world > 1:
        raise NotAvailableError(
            f"{_FLAG} runs in one process only ({world} processes here); train in one process, or under torchrun "
            "without it (pass --no-invertible-memory when resuming a run that used it)",
            filename=where,
        )


def memory_saving_model(model: nn.Module, where: str = "train") -> nn.Module:
    """``InvertibleMemory(model)``: same parameters (no copy), same ``log_prob``; with gradients
    enabled its backward recomputes activations from outputs instead of keeping them.

    Raises:
        NotAvailableError: ``model`` is not an unfused compiled flow (a ``FlowModel`` from
            ``flowdsl.compile``, not its ``fuse()``).
    """
    from flowdsl.runtime.model import FlowModel

    ok = isinstance(model, FlowModel) and not model.is_fused
    if not ok:
        raise NotAvailableError(
            f"{_FLAG} needs an unfused compiled flow (flowdsl.compile) whose steps have inverses; "
            f"got {type(model).__name__}",
            filename=where,
        )
    from flowdsl.runtime.training.memory import InvertibleMemory

    return InvertibleMemory(model)
