"""The FDRL model of a run: the settings beyond the spec, the estimator, its EMA copy, the
model scale and the source.

:class:`FDRLSettings` are the knobs that ``flowdsl train`` flags add to a spec's
``objective fdrl(...)`` and ``train(...)`` (stored under ``"fdrl"`` in a run's config);
:class:`FDRLModel` holds everything a checkpoint keeps (``estimator.*``, ``ema.*``, the model
scale and the source's state); :func:`ema_update` is the EMA step of Algorithm 1.
Training: :mod:`flowdsl.runtime.objectives.fdrl.train`; sampling and reloading a run:
:mod:`flowdsl.runtime.objectives.fdrl.runs`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor, nn

from flowdsl.compiler.kinds.fdrl import resolve_args
from flowdsl.errors import DataError
from flowdsl.runtime.objectives.fdrl.estimators import build_estimator
from flowdsl.runtime.objectives.fdrl.sources import (
    DATA_NOISE,
    DataGaussianSource,
    DataScale,
    DataSource,
    PriorSource,
    Source,
    UniformSource,
)

__all__ = ["FDRLSettings", "resolve_settings", "is_fdrl_spec", "FDRLModel", "build_model", "ema_update"]


@dataclass
class FDRLSettings:
    """FDRL knobs beyond the spec's ``objective fdrl(...)`` and ``train(...)`` (flags override)."""

    ema: float = 0.998  # EMA decay of the estimator weights
    kappa: Optional[int] = None  # extra sampling steps after K (None: images 10 for uniform, else 20; vectors 0)
    source_data: Optional[str] = None  # a second data set as the source (translation)
    source_classes: Optional[list[int]] = None  # keep these labels of the source data set
    data_classes: Optional[list[int]] = None  # keep these labels of the target data set
    source_checkpoint: Optional[str] = None  # source=prior: the trained flow (run folder or file)
    source_temperature: float = 1.0  # source=prior: the flow's sampling temperature
    data_noise: float = DATA_NOISE  # Gaussian dequantisation noise of image batches (model scale)
    eval_n: int = 1000  # particles per evaluation
    eval_batch: int = 0  # particles per sampler chunk at evaluation (0: all at once)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FDRLSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})

    def source_kind(self, spec_source: str) -> str:
        return "data" if self.source_data else spec_source

    def kappa_for(self, source: str, image: bool = True) -> int:
        """κ: the paper's 20 (10 for the uniform source) on images; 0 on vectors, where the
        particles of a toy overshoot the data within 20 steps past K (benchmarks/fdrl.md)."""
        if self.kappa is not None:
            return int(self.kappa)
        if not image:
            return 0
        return 10 if source == "uniform" else 20


def resolve_settings(stored: Optional[dict[str, Any]] = None, **overrides: Any) -> FDRLSettings:
    s = FDRLSettings.from_dict(stored or {})
    for k, v in overrides.items():
        if v is None:
            continue
        if not hasattr(s, k):
            raise TypeError(f"unknown FDRL setting {k!r}")
        setattr(s, k, list(v) if isinstance(v, tuple) else v)
    if not 0 <= s.ema < 1:
        raise DataError(f"ema must be in [0, 1), got {s.ema}", filename="train")
    if s.kappa is not None and s.kappa < 0:
        raise DataError(f"kappa must be ≥ 0, got {s.kappa}", filename="train")
    if s.eval_n < 2:
        raise DataError(f"eval_n must be ≥ 2, got {s.eval_n}", filename="train")
    return s


def is_fdrl_spec(spec: Any) -> bool:
    return getattr(getattr(spec, "objective", None), "name", "") == "fdrl"


class FDRLModel(nn.Module):
    """Everything a run keeps: the estimator, its EMA copy, the model scale and the source."""

    def __init__(self, spec: Any, settings: FDRLSettings, seed: int = 0, levels: Optional[int] = None) -> None:
        super().__init__()
        self.spec = spec
        self.args = resolve_args(spec)
        self.settings = settings
        shape = tuple(int(d) for d in spec.input.shape)
        self.input_shape = shape
        image = getattr(spec.input, "kind", "image") == "image"
        if levels is None and image:
            levels = getattr(spec.input, "levels", None) or 256
        self.scale = DataScale(shape, levels if image else None)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.estimator = build_estimator(self.args.estimator, shape, self.args.loss)
        self.ema = copy.deepcopy(self.estimator)
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.source_kind = settings.source_kind(self.args.source)
        self.source: Source
        if self.source_kind == "data_gaussian":
            self.source = DataGaussianSource(shape, clamp=self.scale.clamp)
        elif self.source_kind == "uniform":
            self.source = UniformSource(shape)
        elif self.source_kind == "prior":
            import flowdsl

            self.source = PriorSource(flowdsl.compile(spec, seed=seed), self.scale, settings.source_temperature)
        elif self.source_kind == "data":
            self.source = UniformSource(shape)  # replaced by set_source_data()
        else:  # pragma: no cover - the argument model only allows the above
            raise DataError(f"unknown source {self.source_kind!r}", filename="fdrl")

    def set_source_data(self, x_raw: Tensor, name: str) -> None:
        self.source = DataSource(x_raw, self.scale, name, self.settings.data_noise)

    @property
    def kappa(self) -> int:
        return self.settings.kappa_for(self.source_kind, self.scale.image)

    def sampler_kwargs(self) -> dict[str, Any]:
        a = self.args
        return {"step_size": a.step_size, "noise": a.noise, "divergence": a.divergence, "loss": a.loss}


def build_model(spec: Any, settings: FDRLSettings, seed: int = 0) -> FDRLModel:
    return FDRLModel(spec, settings, seed)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, parameter by parameter (buffers copied)."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)
