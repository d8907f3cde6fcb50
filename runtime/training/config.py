"""The resolved settings of one training run: the spec's ``train(...)`` values, then flags.

Precedence: language defaults < the spec's ``train(...)`` < command-line flags / keyword
arguments. On ``--resume`` the settings stored in the checkpoint replace the spec's, and only
flags given explicitly override them (so a resumed run continues with what it started with).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Optional

__all__ = ["TrainConfig", "resolve_config", "resume_changes", "resume_setting_changes", "SPEC_FIELDS", "RUN_DEFINING"]

#: the fields the language's ``train(...)`` statement has today; any other TrainConfig field
#: that the spec's train model gains (``schedule``, ``val_fraction``, ...) is picked up as well
SPEC_FIELDS = (
    "data",
    "batch",
    "lr",
    "steps",
    "seed",
    "weight_decay",
    "warmup",
    "clip",
    "eval_every",
    "checkpoint_every",
    "test_batch",
)


#: settings that decide what a run trains on and how its evaluations are compared: changing one on
#: ``--resume`` would mix two runs (another test split, another "best"), so it needs
#: ``--override-settings`` (and is recorded in the run); steps, max_time, eval_every,
#: checkpoint_every, log_every, test_batch, threads, sample_n and invertible_memory may change freely
RUN_DEFINING = (
    "data",
    "batch",
    "lr",
    "seed",
    "weight_decay",
    "warmup",
    "clip",
    "schedule",
    "min_lr_ratio",
    "val_fraction",
    "val_max",
    "eval_max",
)


@dataclass
class TrainConfig:
    """Every knob of :func:`flowdsl.runtime.training.train` (defaults = the language's)."""

    data: Optional[str] = None
    batch: int = 64  # global batch (all processes together)
    lr: float = 1e-3  # peak learning rate of AdamW
    steps: int = 2000  # optimizer updates
    seed: int = 0
    weight_decay: float = 0.0  # AdamW decoupled decay on weight matrices/kernels (ndim ≥ 2)
    warmup: int = 100  # linear warm-up steps
    clip: float = 50.0  # max global gradient norm
    eval_every: int = 200  # steps between validation/test evaluations
    checkpoint_every: int = 200  # steps between checkpoints (last.pt)
    test_batch: int = 256  # batch size for evaluation
    schedule: str = "cosine"  # "cosine" (decay to min_lr_ratio·lr after warm-up) or "constant"
    min_lr_ratio: float = 0.05
    val_fraction: float = 0.1  # share of the train split held out for checkpoint selection
    val_max: int = 2000  # at most this many validation examples
    eval_max: int = 0  # evaluate at most this many test examples at intervals (0: all)
    threads: int = 1  # torch intra-op threads per process (1 is fastest for small flows on shared CPUs)
    max_time: float = 0.0  # stop after this many seconds (0: no limit); the run then ends early
    log_every: int = 0  # steps between progress lines (0: about 50 per run)
    sample_n: int = 64  # samples written to samples.png at the end (0: none)
    sample_temperature: float = 0.7
    invertible_memory: bool = (
        False  # backward recomputes each step's activations from its outputs (less memory, ~1.4x time)
    )
    precision: str = "32"  # "32" or "bf16-mixed" (conditioner nets under bfloat16 autocast; .precision)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def validate(self) -> None:
        """Every value in range and finite (also when called from Python, where no argparse type
        checked it): a bad setting is a :class:`flowdsl.errors.DataError` before anything is written."""
        from flowdsl.errors import DataError

        problems = []

        def number(k: str, lo: float, hi: float = math.inf, *, open_lo: bool = False, whole: bool = False) -> None:
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (whole and not isinstance(v, int)):
                problems.append(f"{k} must be a {'whole ' if whole else ''}number, got {v!r}")
            elif not math.isfinite(v):
                problems.append(f"{k} must be finite, got {v}")
            elif (v <= lo if open_lo else v < lo) or v > hi:
                low = f"> {lo:g}" if open_lo else f"≥ {lo:g}"
                problems.append(f"{k} must be {low}" + (f" and ≤ {hi:g}" if hi < math.inf else "") + f", got {v}")

        number("batch", 1, whole=True)
        number("lr", 0, open_lo=True)
        number("steps", 0, whole=True)
        number("seed", 0, 2**63 - 1, whole=True)
        number("weight_decay", 0)
        number("warmup", 0, whole=True)
        number("clip", 0, open_lo=True)
        for k in ("eval_every", "checkpoint_every", "test_batch", "threads"):
            number(k, 1, whole=True)
        for k in ("val_max", "eval_max", "log_every", "sample_n"):
            number(k, 0, whole=True)
        number("min_lr_ratio", 0, 1)
        number("max_time", 0)
        number("sample_temperature", 0, open_lo=True)
        if self.schedule not in ("cosine", "constant"):
            problems.append(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        number("val_fraction", 0)
        vf = self.val_fraction
        if isinstance(vf, (int, float)) and not isinstance(vf, bool) and math.isfinite(vf) and not 0 <= vf < 1:
            problems.append(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not isinstance(self.invertible_memory, bool):
            problems.append(f"invertible_memory must be true or false, got {self.invertible_memory!r}")
        if self.precision not in ("32", "bf16-mixed"):
            problems.append(f"precision must be 32 or bf16-mixed, got {self.precision!r}")
        if problems:
            raise DataError("invalid training settings: " + "; ".join(dict.fromkeys(problems)), filename="train")


def resolve_config(spec: Any = None, stored: dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """Build the run's :class:`TrainConfig`.

    Args:
        spec: the parsed spec (its ``train`` model supplies defaults), or None.
        stored: settings saved in a checkpoint (``--resume``); they replace the spec's.
        overrides: explicit values (None means "not given").
    """
    cfg = TrainConfig()
    if stored is not None:
        cfg = TrainConfig.from_dict({**cfg.to_dict(), **stored})
    elif spec is not None:
        t = getattr(spec, "train", None)
        if t is not None:  # every TrainConfig field the spec's train model has (and sets)
            for f in fields(TrainConfig):
                v = getattr(t, f.name, None)
                if v is not None and not callable(v):
                    setattr(cfg, f.name, v)
    for k, v in overrides.items():
        if v is None:
            continue
        if not hasattr(cfg, k):
            raise TypeError(f"unknown training setting {k!r}")
        setattr(cfg, k, v)
    cfg.validate()
    return cfg


def resume_changes(stored: dict[str, Any], given: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{setting: (stored value, given value)}`` for the :data:`RUN_DEFINING` settings given
    (not None) with a value other than the run's stored one."""
    base = TrainConfig.from_dict({**TrainConfig().to_dict(), **(stored or {})})
    changes = {}
    for k in RUN_DEFINING:
        new = given.get(k)
        if new is None:
            continue
        old = getattr(base, k)
        if new != old:
            changes[k] = (old, new)
    return changes


def resume_setting_changes(
    ckpt: dict[str, Any], given: dict[str, Any], override: bool, where: str
) -> list[dict[str, Any]]:
    """The run's history of setting changes after this ``--resume``: the checkpoint's
    ``extra["setting_changes"]``, plus ``{"step", "changes": {name: [old, new]}}`` when ``given``
    changes :data:`RUN_DEFINING` settings and ``override`` allows it.

    Raises:
        CheckpointError: ``given`` changes run-defining settings without ``override`` (names each).
    """
    from flowdsl.errors import CheckpointError

    history = list((ckpt.get("extra") or {}).get("setting_changes") or [])
    changes = resume_changes(ckpt.get("config") or {}, given)
    if changes and not override:
        raise CheckpointError(
            "--resume with settings other than the run's: "
            + ", ".join(f"{k} {old!r} → {new!r}" for k, (old, new) in changes.items())
            + "; they change what the run trains on or how its evaluations compare, so the run would mix two",
            filename=where,
            notes=(
                "resume without them, start a new run (another --out), or pass --override-settings to "
                "continue with them (the change is recorded in the run)",
            ),
        )
    if changes:
        history.append({"step": int(ckpt["step"]), "changes": {k: [old, new] for k, (old, new) in changes.items()}})
    return history
