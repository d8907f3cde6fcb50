"""``--max-time`` for the whole command, and evaluations that show progress and keep to it.

``flowdsl train --max-time T`` bounds the whole run, evaluations and the final report included:

* :class:`TimeBudget` holds the deadline ``t_start + T`` (``t_start``: when the ``flowdsl``
  process started, :func:`command_start_time`, or when training was called from Python) and
  measures what is left to do: the time of a training step (a moving average), the time per
  evaluated example (measured on one batch before the loop, then on every evaluation) and the
  time of a checkpoint write. The loop stops training as soon as one more step plus everything the end of the
  run still needs — the final evaluation of the validation and test splits, the final report's
  scoring of the best weights, the samples — would no longer fit before the deadline.
* :class:`Evaluator` scores a split through :func:`~.evaluation.score_bpd` with the deadline,
  so an estimate that was too low can only shorten an evaluation, never overrun the limit: a
  cut evaluation scores the examples it reached and is listed as partial in the summary.
  Evaluations that take longer than a second show their progress (a transient tqdm bar on a
  terminal, otherwise a line every 5 seconds).

Without a time limit nothing is estimated and evaluations always score every example.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Optional

from torch import Tensor, nn

from flowdsl.runtime.training.distributed import DistInfo
from flowdsl.runtime.training.evaluation import score_bpd
from flowdsl.runtime.training.progress import say

__all__ = ["TimeBudget", "Evaluator", "command_start_time"]

#: seconds kept for writing the run files (curves.png, summary.json, weights) at the end
END_FIXED_SECONDS = 1.0


def command_start_time() -> Optional[float]:
    """When this process started (``time.time()`` scale), if it is the ``flowdsl`` command
    itself (``flowdsl ...``, ``python -m flowdsl ...``, ``python -m flowdsl.runtime.training ...``),
    so that ``--max-time`` also covers start-up (importing torch); None when flowdsl runs inside
    another program (its time limit then starts when training is called). Linux ``/proc``;
    None elsewhere."""
    import os

    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    as_module = getattr(main_spec, "name", "") in ("flowdsl.__main__", "flowdsl.runtime.training.__main__")
    if not as_module and os.path.basename(sys.argv[0] if sys.argv else "") != "flowdsl":
        return None
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of stat(5): starttime, in clock ticks since boot
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        age = uptime - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - age if 0 <= age < 3600 else None


class TimeBudget:
    """The deadline of a run (None without ``max_time``) and the measured costs of what remains."""

    def __init__(self, t_start: float, max_time: float) -> None:
        self.deadline: Optional[float] = t_start + max_time if max_time and max_time > 0 else None
        self.step_seconds = 0.0  # moving average of one training step
        self.example_seconds = 0.0  # per evaluated example (the largest recent measurement)
        self.write_seconds = 0.0  # the slowest checkpoint write so far

    def note_step(self, seconds: float) -> None:
        self.step_seconds = seconds if self.step_seconds == 0.0 else 0.7 * self.step_seconds + 0.3 * seconds

    def note_eval(self, seconds: float, n: int) -> None:
        if n > 0:
            rate = seconds / n
            self.example_seconds = max(rate, 0.5 * self.example_seconds + 0.5 * rate)

    def note_write(self, seconds: float) -> None:
        self.write_seconds = max(self.write_seconds, seconds)

    def seconds_for(self, examples: int) -> float:
        """Estimated seconds to evaluate ``examples`` examples."""
        return self.example_seconds * examples

    @property
    def eval_deadline(self) -> Optional[float]:
        """When evaluations must stop: the deadline minus the time kept for writing the run files."""
        return None if self.deadline is None else self.deadline - END_FIXED_SECONDS

    def affords(self, examples: int) -> bool:
        """Whether ``examples`` more evaluated examples fit, keeping half of the time for the
        run files (no time limit: always)."""
        return (
            self.deadline is None or time.time() + self.seconds_for(examples) + END_FIXED_SECONDS / 2 <= self.deadline
        )

    def left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.time()

    def expired(self) -> bool:
        """Whether only the time kept for writing the run files is left."""
        return self.deadline is not None and time.time() >= self.eval_deadline

    def must_stop(self, end_examples: int) -> bool:
        """Whether one more step and the end of the run (``end_examples`` examples to evaluate,
        and the run files) would overrun the deadline."""
        if self.deadline is None:
            return False
        # the end writes best.pt and last.pt (at most) and the run files
        need = self.step_seconds + self.seconds_for(end_examples) + 2 * self.write_seconds + END_FIXED_SECONDS
        return time.time() + need > self.deadline


class _Shown:
    """Progress of one evaluation: nothing for the first second, then a bar or periodic lines."""

    def __init__(self, label: str, total: int, quiet: bool, info: DistInfo) -> None:
        self.label, self.total, self.quiet, self.info = label, total, quiet, info
        self.t0 = self.last = time.time()
        self.bar = None
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if self.quiet or not self.info.main:
            return
        now = time.time()
        if now - self.t0 < 1.0:
            return
        if self.bar is None and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=f"evaluating {self.label}", unit="ex", leave=False)
            except ImportError:  # pragma: no cover - tqdm is optional
                self.bar = False
        if self.bar:
            self.bar.update(done - self.bar.n)
        elif not self.shown or now - self.last >= 5.0:
            say(f"  evaluating {self.label}: {done:,}/{total:,} examples ({now - self.t0:.0f} s)", False, self.info)
            self.last = now
        self.shown = True

    def close(self, n: int) -> None:
        if self.bar:
            self.bar.close()
        if self.shown and not self.bar:
            say(f"  evaluated {self.label}: {n:,} examples in {time.time() - self.t0:.1f} s", self.quiet, self.info)


class Evaluator:
    """Bits/dim of a split within the run's :class:`TimeBudget`, with progress; remembers the
    evaluations the deadline cut short (``partial``)."""

    def __init__(self, model: nn.Module, cfg: Any, data: Any, info: DistInfo, budget: TimeBudget, quiet: bool):
        self.model, self.cfg, self.data, self.info, self.budget, self.quiet = model, cfg, data, info, budget, quiet
        self.partial: list[str] = []

    def probe(self, x: Optional[Tensor], context: Optional[Tensor] = None) -> None:
        """Measure the cost per example on one evaluation batch (only with a time limit)."""
        if self.budget.deadline is None or x is None or len(x) == 0:
            return
        xb = x[: self.cfg.test_batch]
        cb = None if context is None else context[: self.cfg.test_batch]
        t0 = time.time()
        _, n = score_bpd(self.model, xb, self.data.dims, self.data.levels, self.cfg.test_batch, self.info, context=cb)
        self.budget.note_eval(time.time() - t0, n)

    def score(self, label: str, x: Optional[Tensor], context: Optional[Tensor] = None) -> tuple[float, int]:
        """``(bits/dim, examples scored)`` of ``x`` (``(nan, 0)`` when there is no such split); with
        ``context`` (``x``'s contexts) the conditional bits/dim."""
        if x is None:
            return math.nan, 0
        total = len(x)
        shown = _Shown(label, total, self.quiet, self.info)
        t0 = time.time()
        bpd, n = score_bpd(
            self.model,
            x,
            self.data.dims,
            self.data.levels,
            self.cfg.test_batch,
            self.info,
            deadline=self.budget.eval_deadline,
            progress=shown,
            context=context,
        )
        self.budget.note_eval(time.time() - t0, n)
        shown.close(n)
        if n < total:
            self.partial.append(f"{label}: {n} of {total} examples (--max-time)")
        return bpd, n
