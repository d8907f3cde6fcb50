"""The run folder of ``flowdsl train``: resume or refuse, clear a fresh start, settings and summary.

A run folder holds ``last.pt``, ``best.pt``, ``weights.safetensors``, ``metrics.csv``,
``curves.png``, ``samples.png``, ``summary.json`` (:data:`RUN_FILES`, removed on a fresh start
so no stale file is taken for the new run's) and ``spec.flow`` and ``config.json`` (rewritten
by every run, resumed or not). These helpers touch files only; the loop decides which
process calls them and when the processes wait for each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from flowdsl.errors import CheckpointError
from flowdsl.runtime.training.config import TrainConfig

__all__ = ["RUN_FILES", "resume_point", "clear_run_files", "write_run_settings", "write_summary"]

RUN_FILES = ("last.pt", "best.pt", "weights.safetensors", "metrics.csv", "curves.png", "samples.png", "summary.json")


def resume_point(out: Path, resume: bool, overwrite: bool) -> Optional[Path]:
    """The checkpoint to resume from (``out/last.pt``), or None for a fresh start.

    Raises:
        CheckpointError: the folder holds a checkpoint and neither ``resume`` nor ``overwrite``
            is set (a run is never clobbered unless told to).
    """
    last = out / "last.pt"
    if resume and last.exists():
        return last
    if not resume and last.exists() and not overwrite:
        raise CheckpointError(
            "run folder already holds a checkpoint; pass --resume to continue it or --overwrite to start again",
            filename=str(out),
        )
    return None


def clear_run_files(out: Path) -> None:
    """A fresh start: no stale best.pt or metrics from an earlier run."""
    for name in RUN_FILES:
        try:
            (out / name).unlink()
        except FileNotFoundError:
            pass


def write_run_settings(out: Path, spec: Any, cfg: TrainConfig) -> None:
    """Create the folder and write ``spec.flow`` (the spec's text) and ``config.json``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.flow").write_text(getattr(spec, "source", ""), encoding="utf-8")
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
