"""Training guards: stop on a non-finite loss naming the layer; Ctrl-C stops cleanly.

``InterruptFlag`` turns the first SIGINT into a request the loop honours after the current step
(writing ``last.pt``); ``raise_nonfinite`` runs the model layer by layer on the offending batch
(``FlowModel.find_nonfinite``) and raises a :class:`flowdsl.errors.NumericalError` naming the
step, the layer and its source line.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

__all__ = ["InterruptFlag", "raise_nonfinite", "recovery_advice"]


def recovery_advice(last_good: str) -> str:
    """What to do after a numerical failure, given the loop's account of its last good checkpoint."""
    if last_good.startswith("no checkpoint"):
        return "Lower the learning rate or raise clip and start again"
    return "Lower the learning rate or raise clip, then continue with --resume"


class InterruptFlag:
    """Ctrl-C (SIGINT) during training sets a flag; the loop stops after the current step,
    writes ``last.pt`` and raises KeyboardInterrupt (a second Ctrl-C interrupts at once)."""

    def __init__(self) -> None:
        import signal
        import threading

        self.requested = False
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        if self._old is not None:
            import signal

            signal.signal(signal.SIGINT, self._old)
            self._old = None


def raise_nonfinite(
    model: nn.Module, x: Tensor, step: int, value: float, out: Path, last_good: str = "", context: Tensor | None = None
) -> None:
    """Stop training with a message naming the step, the first layer that went non-finite and
    ``last_good`` (the loop's account of its last finite checkpoint, e.g. "the last good
    checkpoint is RUN/last.pt (step 40)")."""
    from flowdsl.errors import NumericalError

    where = None
    finder = getattr(model, "find_nonfinite", None)
    if callable(finder):
        try:
            model.eval()
            if context is None:
                where = finder(x)
            else:
                try:
                    where = finder(x, context=context)
                except TypeError:  # a model whose search does not take the context: no layer named
                    where = None
        finally:
            model.train()
    detail = (
        f"; the first non-finite value comes from {where}"
        if where
        else "; every layer is finite on this batch (the loss itself overflowed)"
    )
    raise NumericalError(
        f"training stopped at step {step}: the loss is {value}{detail}; {last_good or 'see ' + str(out)}. "
        + recovery_advice(last_good),
        filename=str(out),
    )
