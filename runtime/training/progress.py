"""Progress output of ``flowdsl train``: messages on stdout, or a tqdm bar on a terminal.

Only the main process prints, and nothing with ``quiet``. On a terminal (stderr a tty, tqdm
installed) a bar shows the loss and bits/dim and evaluation lines are written above it;
otherwise every evaluation row is printed, and logging rows at most every 5 seconds, each with
the steps per second since the loop started.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from flowdsl.runtime.training.distributed import DistInfo

__all__ = ["say", "Progress"]


def say(msg: str, quiet: bool, info: DistInfo) -> None:
    """Print ``msg`` in the main process unless ``quiet``."""
    if not quiet and info.main:
        print(msg, flush=True)


class Progress:
    """Progress of a run of ``total`` steps that starts (or resumes) at step ``start``."""

    def __init__(self, total: int, start: int, quiet: bool, info: DistInfo) -> None:
        self.total, self.start, self.quiet, self.info = total, start, quiet, info
        self.bar = None
        if not quiet and info.main and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, unit="step")
            except ImportError:  # pragma: no cover - tqdm is optional
                pass
        self.t_loop = time.time()
        self.last_print = self.t_loop

    def say(self, msg: str) -> None:
        say(msg, self.quiet, self.info)

    def row(self, step: int, row: dict[str, Any], lr: float, do_eval: bool, best: dict[str, Any]) -> None:
        """Show a metrics row (``train_loss``, ``train_bpd``; ``val_bpd``, ``test_bpd`` when ``do_eval``)."""
        msg = (
            f"step {step}/{self.total}  loss {row['train_loss']:.4f} nats/dim  "
            f"train {row['train_bpd']:.3f} bits/dim  lr {lr:.2e}"
        )
        if do_eval:
            msg += f"  | val {row['val_bpd']:.3f}  test {row['test_bpd']:.3f} bits/dim  " + (
                f"(best val {best['val_bpd']:.3f} @ {best['step']})" if best["step"] >= 0 else "(no best yet)"
            )
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"loss {row['train_loss']:.3f} bpd {row['train_bpd']:.3f}"
                + (f" test {row['test_bpd']:.3f}" if do_eval else "")
            )
            if do_eval:
                self.bar.write(msg)
        elif do_eval or time.time() - self.last_print >= 5.0:
            rate = (step - self.start) / max(time.time() - self.t_loop, 1e-9)
            self.say(msg + f"  {rate:.1f} it/s")
            self.last_print = time.time()

    def tick(self) -> None:
        """One step done."""
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
