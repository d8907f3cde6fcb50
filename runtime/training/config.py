"""The resolved settings of one training run: the spec's ``train(...)`` values, then flags.

Precedence: language defaults < the spec's ``train(...)`` < command-line flags / keyword
arguments. On ``--resume`` the settings stored in the checkpoint replace the spec's, and only
flags given explicitly override them (so a resumed run continues with what it started with).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Optional

__all__ = ["TrainConfig", "resolve_config", "SPEC_FIELDS"]

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
        from flowdsl.errors import DataError

        problems = []
        if self.batch < 1:
            problems.append(f"batch must be ≥ 1, got {self.batch}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.steps < 0:
            problems.append(f"steps must be ≥ 0, got {self.steps}")
        if self.schedule not in ("cosine", "constant"):
            problems.append(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not 0 <= self.val_fraction < 1:
            problems.append(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not isinstance(self.invertible_memory, bool):
            problems.append(f"invertible_memory must be true or false, got {self.invertible_memory!r}")
        if self.precision not in ("32", "bf16-mixed"):
            problems.append(f"precision must be 32 or bf16-mixed, got {self.precision!r}")
        if self.threads < 1:
            problems.append(f"threads must be ≥ 1, got {self.threads}")
        for k in ("eval_every", "checkpoint_every", "test_batch"):
            if getattr(self, k) < 1:
                problems.append(f"{k} must be ≥ 1, got {getattr(self, k)}")
        problems += _range_problems(self)
        if problems:
            raise DataError("invalid training settings: " + "; ".join(problems), filename="train")


def _range_problems(cfg: "TrainConfig") -> list[str]:
    """The flags' ranges (flowdsl.cliargs, the language's train(...)) for values that reach the
    config another way (keyword arguments, stored settings): finite, and on the right side of 0."""
    import math

    from flowdsl.compiler.limits import LIMITS

    out = []
    for k in ("lr", "clip", "weight_decay", "max_time", "min_lr_ratio", "sample_temperature"):
        v = getattr(cfg, k)
        if not math.isfinite(v):
            out.append(f"{k} must be a finite number, got {v}")
        elif k in ("clip", "sample_temperature") and not v > 0:
            out.append(f"{k} must be > 0, got {v}")
        elif v < 0:
            out.append(f"{k} must be ≥ 0, got {v}")
    for k in ("warmup", "log_every", "sample_n", "seed"):
        if getattr(cfg, k) < 0:
            out.append(f"{k} must be ≥ 0, got {getattr(cfg, k)}")
    if cfg.threads > LIMITS.max_threads:
        out.append(f"threads must be at most {LIMITS.max_threads} (FLOWDSL_MAX_THREADS), got {cfg.threads}")
    return out


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
