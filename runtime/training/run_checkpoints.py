"""The checkpoints of one training run, and an honest account of the last good one.

:class:`RunCheckpoints` writes ``last.pt`` / ``best.pt`` of the run (main process only) through
:func:`~.checkpoint.save_checkpoint`, which refuses a state holding NaN/Inf and turns a failed
write into a :class:`~flowdsl.errors.CheckpointError`. It remembers the last ``last.pt`` that was
written (or the one the run resumed from), so every error message names the checkpoint the user
can really continue from — or says that there is none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from flowdsl.errors import CheckpointError, NumericalError
from flowdsl.runtime.training.checkpoint import save_checkpoint, spec_architecture
from flowdsl.runtime.training.config import TrainConfig
from flowdsl.runtime.training.distributed import DistInfo
from flowdsl.runtime.training.guards import recovery_advice
from flowdsl.runtime.training.models import spec_sha256

__all__ = ["RunCheckpoints"]


class RunCheckpoints:
    """Checkpoint writer of a run. ``best`` and ``setting_changes`` are the loop's live objects
    (saved as they are at each write); ``resumed_from`` / ``start``: the checkpoint the run
    continued from and its step (None for a fresh run)."""

    def __init__(
        self,
        spec: Any,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        cfg: TrainConfig,
        info: DistInfo,
        best: dict[str, Any],
        setting_changes: list[dict[str, Any]],
        resumed_from: Optional[Path] = None,
        start: int = 0,
    ) -> None:
        self.spec, self.model, self.optimizer, self.cfg, self.info = spec, model, optimizer, cfg, info
        self.best, self.setting_changes = best, setting_changes
        self.good_path: Optional[Path] = resumed_from
        self.good_step: Optional[int] = start if resumed_from is not None else None
        self._ids = (spec_sha256(spec), spec_architecture(spec))

    def last_good(self) -> str:
        """ "the last good checkpoint is RUN/last.pt (step N)", or that there is none."""
        if self.good_path is None:
            return "no checkpoint of this run was written (nothing to resume)"
        return f"the last good checkpoint is {self.good_path} (step {self.good_step})"

    def write(self, path: Path, step: int) -> None:
        """Write ``path`` (``last.pt`` or ``best.pt``) with the state of update ``step``.

        Raises:
            NumericalError: the state holds NaN/Inf (nothing is written); names the last good one.
            CheckpointError: the write failed; names the file and the last good checkpoint.
        """
        if not self.info.main:
            return
        spec = self.spec
        try:
            save_checkpoint(
                path,
                spec_text=getattr(spec, "source", ""),
                spec_sha256=self._ids[0],
                arch_sha256=self._ids[1],
                spec_name=str(getattr(spec, "name", "")),
                spec_filename=str(getattr(spec, "filename", "")),
                step=step,
                model_state=self.model.state_dict(),
                optimizer_state=self.optimizer.state_dict(),
                rng={"torch": torch.get_rng_state()},
                config=self.cfg.to_dict(),
                extra={"best": dict(self.best), "world": self.info.world, "setting_changes": self.setting_changes},
            )
        except NumericalError as e:
            raise NumericalError(
                f"training stopped at step {step}: {e.message}; {self.last_good()}. "
                + recovery_advice(self.last_good()),
                filename=e.filename,
            ) from None
        except CheckpointError as e:
            raise CheckpointError(f"{e.message}; {self.last_good()}", filename=e.filename) from None
        if path.name == "last.pt":
            self.good_path, self.good_step = path, step
