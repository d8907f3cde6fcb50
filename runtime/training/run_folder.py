"""The run folder of ``flowdsl train``: lock it, resume or refuse, clear a fresh start, settings, summary.

A run folder holds ``last.pt``, ``best.pt``, ``weights.safetensors``, ``metrics.csv``,
``curves.png``, ``samples.png``, ``summary.json`` (:data:`RUN_FILES`, removed on a fresh start
so no stale file is taken for the new run's) and ``spec.flow`` and ``config.json`` (rewritten
by every run, resumed or not), and ``.lock``, which a training holds locked (``flock``) while
it runs (:class:`RunLock`): a second training into the same folder is refused, and a lock left
by a killed process does not block (the kernel releases ``flock`` locks with their process).
These helpers touch files only; the loop decides which process calls them and when the
processes wait for each other.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from flowdsl.errors import CheckpointError
from flowdsl.runtime.training.config import TrainConfig

__all__ = [
    "RUN_FILES",
    "CHECKPOINT_FILES",
    "LOCK_FILE",
    "RunLock",
    "resume_point",
    "clear_run_files",
    "write_run_settings",
    "write_summary",
    "json_safe",
    "spec_of_run_folder",
]

RUN_FILES = ("last.pt", "best.pt", "weights.safetensors", "metrics.csv", "curves.png", "samples.png", "summary.json")
#: files whose presence means the folder holds a (possibly partial) trained run
CHECKPOINT_FILES = ("last.pt", "best.pt", "weights.safetensors")
LOCK_FILE = ".lock"


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock`` for the duration of a training (a context manager).

    The folder is created if needed; a lock held by another process is a
    :class:`CheckpointError` naming that process. Released on :meth:`release` (and by the kernel
    when the process dies, so a stale lock file never blocks). If the folder was created here
    and holds nothing but the lock file when released, both are removed again (a run that
    failed before writing anything leaves no empty folder).
    """

    def __init__(self, out: Path) -> None:
        import fcntl

        self.out = Path(out)
        self.created = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / LOCK_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise CheckpointError(
                f"run folder is in use by another training (process {holder}); wait for it to end, "
                "or train into another folder with --out",
                filename=str(self.out),
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self.fd: Optional[int] = fd

    def release(self) -> None:
        if self.fd is None:
            return
        import fcntl

        try:
            if self.created and [p.name for p in self.out.iterdir()] == [LOCK_FILE]:
                self.path.unlink()
                self.out.rmdir()
        except OSError:
            pass
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def spec_of_run_folder(path: Any, out: Optional[Any], resume: bool, factory: Any = None) -> Optional[tuple[Any, Path]]:
    """``flowdsl train RUN --resume``: ``(spec, run folder)`` when ``path`` is a run folder (its
    spec is the one stored in ``RUN/last.pt``), None when it is not a folder (a spec file or text).

    Raises:
        CheckpointError: a folder without ``--resume`` (a new run needs a spec file), ``--out``
            naming another folder, nothing to resume, or a stored spec that no longer parses.
    """
    import os

    if not isinstance(path, (str, os.PathLike)) or "\n" in os.fspath(path) or not Path(path).is_dir():
        return None
    run = Path(path)
    if not resume:
        raise CheckpointError(
            "this is a run folder: pass --resume to continue it (a new run starts from a spec file)",
            filename=str(run),
        )
    if out is not None and Path(out).resolve() != run.resolve():
        raise CheckpointError(
            f"--resume of run folder {run} with --out {out}: a run continues in its own folder", filename=str(run)
        )
    last = resume_point(run, True, False)
    from flowdsl.errors import FlowDSLError
    from flowdsl.runtime.training.checkpoint import read_checkpoint
    from flowdsl.runtime.training.models import ModelFactory

    ckpt = read_checkpoint(last)
    try:
        spec = (factory or ModelFactory()).parse(ckpt["spec_text"], filename=ckpt.get("spec_filename") or str(last))
    except FlowDSLError as e:
        raise CheckpointError(
            f"the spec stored in the checkpoint no longer compiles: {e.message}", filename=str(last)
        ) from None
    return spec, run


def resume_point(out: Path, resume: bool, overwrite: bool) -> Optional[Path]:
    """The checkpoint to resume from (``out/last.pt``), or None for a fresh start. Nothing is
    changed on disk: a fresh start clears the folder (:func:`clear_run_files`) only once
    everything else has been checked.

    Raises:
        CheckpointError: ``resume`` and there is no ``last.pt`` (a resume never starts afresh),
            or the folder holds a checkpoint and neither ``resume`` nor ``overwrite`` is set (a run
            is never clobbered unless told to).
    """
    last = out / "last.pt"
    if resume and overwrite:
        raise CheckpointError(
            "--resume continues a run and --overwrite replaces it: give one of them", filename=str(out)
        )
    if resume:
        if last.is_file():
            return last
        others = [name for name in CHECKPOINT_FILES if (out / name).exists()]
        if not out.is_dir():
            why = "there is no such run folder"
        elif others:
            why = f"it holds {', '.join(others)} but no last.pt"
        else:
            why = "it holds no checkpoint"
        raise CheckpointError(
            f"nothing to resume: {why}; --resume never starts a new run",
            filename=str(out),
            notes=(
                "start a new run without --resume" + (" (with --overwrite to replace what is there)" if others else ""),
            ),
        )
    present = [name for name in CHECKPOINT_FILES if (out / name).exists()]
    if present and not overwrite:
        raise CheckpointError(
            f"run folder already holds a run ({', '.join(present)}); pass --resume to continue it "
            "or --overwrite to start again",
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


def write_run_settings(out: Path, spec: Any, cfg: TrainConfig, setting_changes: Optional[list] = None) -> None:
    """Create the folder and write ``spec.flow`` (the spec's text) and ``config.json`` (the
    settings; with ``setting_changes``, the run-defining settings changed on ``--resume
    --override-settings`` as ``[{"step", "changes": {name: [old, new]}}]``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.flow").write_text(getattr(spec, "source", ""), encoding="utf-8")
    settings = cfg.to_dict()
    if setting_changes:
        settings["setting_changes"] = setting_changes
    (out / "config.json").write_text(json.dumps(json_safe(settings), indent=2) + "\n", encoding="utf-8")


def json_safe(value: Any) -> Any:
    """``value`` with NaN and ±Inf floats replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """``summary.json``: always valid JSON (a score that does not exist, such as the best
    validation score of a run that ended while annealing, is ``null``)."""
    text = json.dumps(json_safe(summary), indent=2, default=str, allow_nan=False)
    (out / "summary.json").write_text(text + "\n", encoding="utf-8")
