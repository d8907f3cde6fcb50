"""FDRL training (Algorithm 1 of the paper) behind ``flowdsl train SPEC`` for ``objective fdrl``.

One iteration t (batch B, the estimator r_θ, the objective's K, η, ν):

1. x_p: B training examples on the model scale (the batch indices of the training package's
   :class:`~flowdsl.runtime.training.loop.BatchStream`; images get N(0, 0.03²) noise);
2. x_0 ~ q′ (the source: ``data_gaussian``, ``uniform``, ``prior`` or a second data set);
3. x_K: K flow steps x ← x − η∇ₓf′(r_θ(x)) + ν·ξ with the *current* θ frozen, then detached
   (no gradient through the chain);
4. one optimiser step (AdamW; the learning rate, warm-up and gradient clipping of the training
   package) on the Bregman loss L(θ) with x_q = x_K. The rate stays constant after the warm-up
   (``--schedule constant``, the paper's choice and FDRL's default; ``--schedule cosine`` is
   available): the estimator keeps tracking its moving target, and the EMA averages its
   fluctuations — on the pinwheel toy the EMA of a constant-rate run ends 22× closer to the
   data than its source, a cosine-decayed run 3× (benchmarks/fdrl.md);
5. the EMA of the estimator weights (decay ``ema``, 0.998 by default, ramped up as
   min(ema, (1+t)/(10+t)) early on) is updated; the EMA weights are what sampling, evaluation
   and export use.

Every random draw of iteration t comes from a generator seeded by (seed, t), so a resumed run
repeats exactly what an uninterrupted one would do. Checkpoints are the training package's
(atomic, verified, exact resume): the model state holds ``estimator.*``, ``ema.*``, the model
scale (vectors) and the source's state (the fitted Gaussian; the flow's weights for
``source=prior``, so a run never needs its ``--source-checkpoint`` again); the config holds the
:class:`~flowdsl.runtime.training.config.TrainConfig` plus the FDRL settings under ``"fdrl"``.

Every ``eval_every`` steps (and at the end) ``eval_n`` particles are sampled with the EMA
weights (K + κ steps) and their energy distance to the validation split (a fixed share of the
training split, never trained on) is logged next to the source's; the lowest gives ``best.pt``.
The run folder gets last.pt, best.pt, weights.safetensors (the best state), metrics.csv,
curves.png, samples.png, summary.json, spec.flow and config.json, like an MLE run.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from flowdsl.errors import CheckpointError, DataError, FlowDSLError
from flowdsl.runtime.fdrl.estimators import Estimator, build_estimator
from flowdsl.runtime.fdrl.losses import bregman_loss
from flowdsl.runtime.fdrl.sampler import Guidance, run_flow
from flowdsl.runtime.fdrl.sources import (
    DATA_NOISE,
    DataGaussianSource,
    DataScale,
    DataSource,
    PriorSource,
    Source,
    UniformSource,
    gen,
    load_flow_into,
)
from flowdsl.runtime.objectives.fdrl import resolve_args

__all__ = [
    "FDRLSettings",
    "FDRLModel",
    "resolve_settings",
    "build_model",
    "train_fdrl",
    "load_fdrl",
    "sample_fdrl",
    "ema_update",
    "FDRL_COLUMNS",
    "is_fdrl_spec",
]

FDRL_COLUMNS = ("step", "lr", "train_loss", "grad_norm", "val_energy", "source_energy", "seconds")


@dataclass
class FDRLSettings:
    """FDRL knobs beyond the spec's ``objective fdrl(...)`` and ``train(...)`` (flags override)."""

    ema: float = 0.998                       # EMA decay of the estimator weights
    kappa: Optional[int] = None              # extra sampling steps after K (None: images 10 for uniform, else 20; vectors 0)
    source_data: Optional[str] = None        # a second data set as the source (translation)
    source_classes: Optional[list[int]] = None  # keep these labels of the source data set
    data_classes: Optional[list[int]] = None    # keep these labels of the target data set
    source_checkpoint: Optional[str] = None  # source=prior: the trained flow (run folder or file)
    source_temperature: float = 1.0          # source=prior: the flow's sampling temperature
    data_noise: float = DATA_NOISE           # Gaussian dequantisation noise of image batches (model scale)
    eval_n: int = 1000                       # particles per evaluation
    eval_batch: int = 0                      # particles per sampler chunk at evaluation (0: all at once)

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


# -- the model ------------------------------------------------------------------------------


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


# -- data -----------------------------------------------------------------------------------


def _select_classes(ds: Any, classes: Optional[list[int]], what: str) -> Any:
    if not classes:
        return ds
    if ds.labels is None:
        raise DataError(f"{what} {ds.name!r} has no labels, so classes {classes} cannot be selected", filename=str(ds.name))
    keep = torch.isin(ds.labels, torch.as_tensor(list(classes), dtype=ds.labels.dtype))
    if not bool(keep.any()):
        raise DataError(f"{what} {ds.name!r} has no examples of classes {classes}", filename=str(ds.name))
    sub = ds.subset(torch.nonzero(keep).reshape(-1))
    sub.notes = list(ds.notes) + [f"classes {', '.join(map(str, classes))} only: {len(sub)} of {len(ds)}"]
    return sub


def load_data(spec: Any, name: Optional[str], split: str, seed: int, classes: Optional[list[int]], what: str = "data") -> Any:
    from flowdsl.runtime.data import load_for_spec

    return _select_classes(load_for_spec(spec, name, split, seed=seed), classes, what)


def _split_validation(ds: Any, fraction: float, most: int) -> tuple[Any, Optional[Any]]:
    n_val = min(most, int(round(fraction * len(ds))))
    if n_val <= 0 or n_val >= len(ds):
        return ds, None
    perm = np.random.Generator(np.random.PCG64(0)).permutation(len(ds))
    return ds.subset(np.sort(perm[:-n_val]), "train"), ds.subset(np.sort(perm[-n_val:]), "val")


# -- sampling -------------------------------------------------------------------------------


def sample_fdrl(
    model: FDRLModel,
    n: int,
    seed: int = 0,
    steps: Optional[int] = None,
    use_ema: bool = True,
    guidance: Optional[Guidance] = None,
    x0: Optional[Tensor] = None,
    batch: int = 0,
    return_start: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``n`` particles on the model scale: K + κ flow steps (or ``steps``) from the source.

    Images are clamped to [−1, 1] at the end. ``x0`` replaces the source draw.
    """
    g = gen("fdrl-sample", seed)
    if x0 is None:
        x0 = model.source.sample(int(n), g)
    k = int(model.args.steps + model.kappa) if steps is None else int(steps)
    est = model.ema if use_ema else model.estimator
    x = run_flow(est, x0, k, generator=g, guidance=guidance, clamp=model.scale.clamp, batch=batch, **model.sampler_kwargs())
    return (x, x0) if return_start else x


def load_fdrl(
    run_or_ckpt: str | os.PathLike,
    prefer: str = "best",
    data: Optional[str] = None,
    source_split: str = "test",
) -> tuple[Any, FDRLModel, dict[str, Any]]:
    """Rebuild an FDRL run (spec from the checkpoint) with its weights; ``(spec, model, ckpt)``.

    A run whose source is a data set reloads that data set (``source_split``, default the test
    split: translation is evaluated on unseen source images).
    """
    import flowdsl
    from flowdsl.runtime.training.checkpoint import read_checkpoint, resolve_checkpoint_path, restore

    path = resolve_checkpoint_path(run_or_ckpt, prefer=prefer)
    ckpt = read_checkpoint(path)
    try:
        spec = flowdsl.parse(ckpt["spec_text"], filename=ckpt.get("spec_filename") or "<checkpoint>")
    except FlowDSLError as e:
        raise CheckpointError(f"the spec stored in the checkpoint no longer compiles: {e.message}", filename=str(path)) from None
    if not is_fdrl_spec(spec):
        raise CheckpointError(f"checkpoint of spec {spec.name!r} with objective {spec.objective.name!r}, not fdrl", filename=str(path))
    config = ckpt.get("config") or {}
    settings = resolve_settings(config.get("fdrl") or {})
    seed = int(config.get("seed", 0))
    model = FDRLModel(spec, settings, seed)
    if model.source_kind == "data":
        ds = load_data(spec, settings.source_data, source_split, seed, settings.source_classes, "source data")
        model.set_source_data(ds.x, str(settings.source_data))
    restore(model, ckpt)
    model.eval()
    return spec, model, ckpt


# -- metrics --------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def read_fdrl_metrics(path: str | os.PathLike) -> list[dict[str, Optional[float]]]:
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    with open(p, newline="") as f:
        for r in csv.DictReader(f):
            try:
                rows.append({k: (float(r[k]) if r.get(k) not in (None, "") else None) for k in FDRL_COLUMNS})
            except (ValueError, KeyError):
                continue
    return rows


class FDRLMetricsLog:
    """``metrics.csv`` with the FDRL columns; on resume rows after the checkpoint's step are dropped."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def start(self, resume_step: Optional[int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keep = [r for r in read_fdrl_metrics(self.path) if resume_step is not None and r["step"] is not None and r["step"] <= resume_step]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(FDRL_COLUMNS)
        for r in keep:
            w.writerow([_fmt(int(r[k]) if k == "step" else r[k]) for k in FDRL_COLUMNS])
        self.path.write_text(buf.getvalue())

    def write(self, **row: Any) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(k)) for k in FDRL_COLUMNS])


def plot_fdrl_curves(metrics_csv: str | os.PathLike, out_png: str | os.PathLike, title: str = "") -> None:
    """Loss against the step, and the validation energy distance of EMA samples vs the source's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowdsl.runtime.training.checkpoint import atomic_write

    rows = read_fdrl_metrics(metrics_csv)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    pts = [(r["step"], r["train_loss"]) for r in rows if r["train_loss"] is not None and math.isfinite(r["train_loss"])]
    if pts:
        a1.plot(*zip(*pts), "-", linewidth=1.2, label="Bregman loss (train)")
    a1.set_xlabel("step")
    a1.set_ylabel("loss")
    a1.grid(alpha=0.3)
    a1.legend()
    for key, label, style in (("val_energy", "FDRL samples (EMA)", "o-"), ("source_energy", "source", "--")):
        pts = [(r["step"], r[key]) for r in rows if r[key] is not None and math.isfinite(r[key]) and r[key] > 0]
        if pts:
            a2.plot(*zip(*pts), style, markersize=3, linewidth=1.2, label=label)
    a2.set_yscale("log")
    a2.set_xlabel("step")
    a2.set_ylabel("energy distance to validation data")
    a2.grid(alpha=0.3)
    a2.legend()
    if title:
        fig.suptitle(title)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.tight_layout()
    atomic_write(out_png, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


# -- training -------------------------------------------------------------------------------


def _prepare_out(out: Path, resume: bool, overwrite: bool) -> Optional[Path]:
    last = out / "last.pt"
    if last.exists():
        if resume:
            return last
        if not overwrite:
            raise CheckpointError(
                "run folder already holds a checkpoint; pass --resume to continue it or --overwrite to start again", filename=str(out)
            )
    return None


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def write_fdrl_samples(model: FDRLModel, x: Tensor, path: str | os.PathLike, data: Optional[Tensor] = None, title: str = "") -> None:
    """Samples (model scale) as an image grid (images) or a scatter over data (vectors)."""
    from flowdsl.runtime.training.sampling import write_samples

    if model.scale.image:
        write_samples(model.scale.to_unit(x), path, model.scale.levels, True)
    else:
        write_samples(model.scale.to_data(x), path, None, False, data=data, title=title)


def _eval_energy(model: FDRLModel, ref: Tensor, n: int, seed: int, batch: int) -> tuple[float, float]:
    """Energy distances (FDRL EMA samples, source samples) to reference data (model scale)."""
    from flowdsl.runtime.fdrl.evaluate import energy_distance

    x, x0 = sample_fdrl(model, n, seed=seed, batch=batch, return_start=True)
    if model.scale.image:
        return energy_distance(x, ref), energy_distance(x0.clamp(-1, 1), ref)
    return energy_distance(model.scale.to_data(x), model.scale.to_data(ref)), energy_distance(model.scale.to_data(x0), model.scale.to_data(ref))


def train_fdrl(
    spec: Any,
    data: Optional[str] = None,
    steps: Optional[int] = None,
    out: Optional[str | os.PathLike] = None,
    resume: bool = False,
    *,
    overwrite: bool = False,
    quiet: bool = False,
    fdrl: Optional[dict[str, Any]] = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train the density-ratio estimator of an ``objective fdrl`` spec (see the module docstring).

    Args:
        spec: a parsed spec, a path to a spec file, or spec text.
        data, steps, out, resume, overwrite, quiet, overrides: as for
            :func:`flowdsl.runtime.training.train` (batch, lr, seed, warmup, clip, schedule,
            eval_every, checkpoint_every, threads, max_time, log_every, sample_n, val_fraction …).
        fdrl: :class:`FDRLSettings` fields (ema, kappa, source_data, source_classes,
            data_classes, source_checkpoint, source_temperature, data_noise, eval_n, eval_batch).

    Returns:
        the run summary (also written to ``summary.json``).
    """
    from flowdsl.runtime.training.loop import ModelFactory, as_spec

    spec = as_spec(spec, ModelFactory())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DataError("FDRL training runs in a single process; start it without torchrun", filename=getattr(spec, "filename", "train"))
    if not is_fdrl_spec(spec):
        raise DataError(f"spec {spec.name!r} has objective {spec.objective.name!r}; train_fdrl trains objective fdrl", filename=spec.filename)
    prev_threads = torch.get_num_threads()
    try:
        return _train(spec, data, steps, out, resume, overwrite, quiet, dict(fdrl or {}), overrides)
    finally:
        torch.set_num_threads(prev_threads)


def _train(spec, data, steps, out, resume, overwrite, quiet, fdrl_over, overrides) -> dict[str, Any]:
    from flowdsl.runtime.training.checkpoint import check_spec, read_checkpoint, restore, save_checkpoint, save_safetensors
    from flowdsl.runtime.training.config import resolve_config
    from flowdsl.runtime.training.loop import BatchStream, lr_at

    t_start = time.time()
    out = Path(out) if out is not None else Path("runs") / str(spec.name)
    last_path = _prepare_out(out, resume, overwrite)
    ckpt = None
    if last_path is not None:
        ckpt = read_checkpoint(last_path)
        check_spec(ckpt, spec, str(last_path))
        stored = dict(ckpt.get("config") or {})
        cfg = resolve_config(stored={k: v for k, v in stored.items() if k != "fdrl"}, data=data, steps=steps, **overrides)
        settings = resolve_settings(stored.get("fdrl") or {}, **fdrl_over)
    else:
        if overrides.get("schedule") is None:
            overrides = {**overrides, "schedule": "constant"}  # the paper's constant rate; see the module docstring
        cfg = resolve_config(spec, data=data, steps=steps, **overrides)
        settings = resolve_settings(None, **fdrl_over)
    torch.set_num_threads(cfg.threads)
    args = resolve_args(spec)

    # -- data ------------------------------------------------------------------------------
    full = load_data(spec, cfg.data, "train", cfg.seed, settings.data_classes)
    test = load_data(spec, cfg.data, "test", cfg.seed, settings.data_classes)
    train_ds, val_ds = _split_validation(full, cfg.val_fraction, cfg.val_max)
    ref_ds = val_ds if val_ds is not None else test
    _say(
        f"data {cfg.data}: {len(train_ds)} train, {len(val_ds) if val_ds is not None else 0} validation, {len(test)} test; "
        f"shape {tuple(train_ds.shape)}, {'levels ' + str(train_ds.levels) if train_ds.levels else 'real'}",
        quiet,
    )
    for note in full.notes:
        _say(f"  {note}", quiet)

    # -- model -----------------------------------------------------------------------------
    model = FDRLModel(spec, settings, cfg.seed, levels=train_ds.levels)
    if model.source_kind == "data":
        src = load_data(spec, settings.source_data, "train", cfg.seed, settings.source_classes, "source data")
        model.set_source_data(src.x, str(settings.source_data))
    opt = torch.optim.AdamW(model.estimator.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)
    start = 0
    best = {"val_energy": math.inf, "step": -1}
    if ckpt is not None:
        restore(model, ckpt, opt)
        start = int(ckpt["step"])
        rng = (ckpt.get("rng") or {}).get("torch")
        if isinstance(rng, Tensor):
            torch.set_rng_state(rng)
        best.update({k: v for k, v in (ckpt.get("extra") or {}).get("best", {}).items() if k in best})
        _say(f"resumed {last_path} at step {start}", quiet)
    else:
        model.scale.fit(train_ds.x)
        if isinstance(model.source, DataGaussianSource):
            model.source.fit(model.scale.from_raw(train_ds.x))
        elif isinstance(model.source, PriorSource):
            if not settings.source_checkpoint:
                raise CheckpointError(
                    "source=prior samples this spec's flow: give its trained weights with --source-checkpoint RUN|CKPT",
                    filename=spec.filename,
                )
            load_flow_into(model.source.flow, settings.source_checkpoint, spec)
    model.source.eval()
    ref = model.scale.from_raw(ref_ds.x)
    n_params = sum(p.numel() for p in model.estimator.parameters())
    kappa = model.kappa
    _say(
        f"fdrl {spec.name}: estimator {args.estimator['call']}({', '.join(f'{k}={v}' for k, v in args.estimator['args'].items())}) "
        f"with {n_params:,} parameters, head {model.estimator.head}; loss {args.loss}, divergence {args.divergence}; "
        f"source {model.source.describe()}; K={args.steps} (+κ={kappa} when sampling), η={args.step_size:g}, ν={args.noise:g}; "
        f"{cfg.steps} steps of batch {cfg.batch}, lr {cfg.lr:g}, EMA {settings.ema:g}, {cfg.threads} thread(s)",
        quiet,
    )

    metrics = FDRLMetricsLog(out / "metrics.csv")
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.flow").write_text(getattr(spec, "source", ""), encoding="utf-8")
    config = {**cfg.to_dict(), "fdrl": settings.to_dict()}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    metrics.start(start if ckpt is not None else None)

    def checkpoint(path: Path, step: int) -> None:
        save_checkpoint(
            path,
            spec_text=spec.source,
            spec_sha256=spec.sha256,
            spec_name=str(spec.name),
            spec_filename=str(spec.filename),
            step=step,
            model_state=model.state_dict(),
            optimizer_state=opt.state_dict(),
            rng={"torch": torch.get_rng_state()},
            config=config,
            extra={"best": dict(best), "objective": "fdrl"},
        )

    eval_seed = cfg.seed + 7
    source_energy: Optional[float] = None
    log_every = cfg.log_every or max(1, cfg.steps // 50)
    acc_loss, acc_n, last_gn = 0.0, 0, math.nan
    t_loop = last_print = time.time()
    step = start
    stopped_early = False
    last_ckpt_step = start if ckpt is not None else -1
    stream = BatchStream(len(train_ds), cfg.batch, cfg.seed)
    model.estimator.train()
    while step < cfg.steps:
        lr = lr_at(step, cfg)
        for gr in opt.param_groups:
            gr["lr"] = lr
        g = gen("fdrl-step", cfg.seed, step)
        x_p = model.scale.batch(train_ds.x[stream.indices(step)], g, settings.data_noise)
        x0 = model.source.sample(cfg.batch, g)
        x_q = run_flow(model.estimator, x0, args.steps, generator=g, **model.sampler_kwargs())  # θ frozen; detached
        model.estimator.train()
        loss = bregman_loss(args.loss, model.estimator(x_p), model.estimator(x_q))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.estimator.parameters(), cfg.clip)
        if torch.isfinite(gn):
            opt.step()
        ema_update(model.ema, model.estimator, min(settings.ema, (1.0 + step) / (10.0 + step)))
        acc_loss += float(loss.detach())
        acc_n += 1
        last_gn = float(gn)
        step += 1

        timed_out = cfg.max_time > 0 and time.time() - t_start > cfg.max_time
        final = step == cfg.steps or timed_out
        do_eval = step % cfg.eval_every == 0 or final
        row: dict[str, Any] = {}
        if step % log_every == 0 or do_eval:
            row = {"step": step, "lr": lr, "train_loss": acc_loss / max(acc_n, 1), "grad_norm": last_gn}
            acc_loss, acc_n = 0.0, 0
        if do_eval:
            ve, se = _eval_energy(model, ref, settings.eval_n, eval_seed, settings.eval_batch)
            source_energy = se
            row.update(val_energy=ve, source_energy=se)
            if math.isfinite(ve) and ve < best["val_energy"]:
                best.update(val_energy=ve, step=step)
                checkpoint(out / "best.pt", step)
        if row:
            row["seconds"] = round(time.time() - t_start, 3)
            metrics.write(**row)
            if do_eval or time.time() - last_print >= 5.0:
                rate = (step - start) / max(time.time() - t_loop, 1e-9)
                msg = f"step {step}/{cfg.steps}  loss {row['train_loss']:.4f}  lr {lr:.2e}"
                if do_eval:
                    msg += f"  | energy distance to validation: samples {row['val_energy']:.4g}, source {row['source_energy']:.4g} (best {best['val_energy']:.4g} @ {best['step']})"
                _say(msg + f"  {rate:.1f} it/s", quiet)
                last_print = time.time()
        if step % cfg.checkpoint_every == 0 or do_eval:
            checkpoint(out / "last.pt", step)
            last_ckpt_step = step
        if timed_out and step < cfg.steps:
            stopped_early = True
            _say(f"time limit of {cfg.max_time:g} s reached at step {step}", quiet)
            break
    if step != last_ckpt_step:
        checkpoint(out / "last.pt", step)

    # -- final report ------------------------------------------------------------------------
    from flowdsl.runtime.fdrl.evaluate import energy_distance

    final_ve = math.nan
    if (out / "best.pt").exists():
        bck = read_checkpoint(out / "best.pt")
        restore(model, bck)
        save_safetensors(out / "weights.safetensors", model.state_dict(), spec_text=spec.source, spec_sha256=spec.sha256,
                         step=int(bck["step"]), spec_name=str(spec.name))
    test_ref = model.scale.from_raw(test.x)
    x, x0 = sample_fdrl(model, settings.eval_n, seed=eval_seed + 1, batch=settings.eval_batch, return_start=True)
    if model.scale.image:
        test_e, test_src = energy_distance(x, test_ref), energy_distance(x0.clamp(-1, 1), test_ref)
    else:
        test_e = energy_distance(model.scale.to_data(x), model.scale.to_data(test_ref))
        test_src = energy_distance(model.scale.to_data(x0), model.scale.to_data(test_ref))
    summary = {
        "spec": str(spec.name),
        "spec_sha256": spec.sha256,
        "objective": "fdrl",
        "data": cfg.data,
        "source": model.source_kind,
        "step": step,
        "steps": cfg.steps,
        "stopped_early": stopped_early,
        "best_step": int(best["step"]),
        "best_val_energy": float(best["val_energy"]),
        "test_energy": float(test_e),
        "test_source_energy": float(test_src),
        "test_improvement": float(test_src / test_e) if test_e > 0 else math.inf,
        "sampling_steps": int(args.steps + kappa),
        "seconds": round(time.time() - t_start, 2),
        "parameters": n_params,
        "out": str(out),
    }
    try:
        plot_fdrl_curves(out / "metrics.csv", out / "curves.png", title=f"{spec.name} (fdrl) on {cfg.data}")
    except Exception as e:  # a plot must never lose a finished run
        _say(f"warning: could not plot curves: {e}", quiet)
    if cfg.sample_n > 0:
        xs = sample_fdrl(model, cfg.sample_n, seed=cfg.seed, batch=settings.eval_batch)
        write_fdrl_samples(model, xs, out / "samples.png", data=None if model.scale.image else test.x,
                           title=f"{spec.name}: {args.steps + kappa} FDRL steps from {model.source_kind}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    _say(
        f"done: {step} steps in {summary['seconds']:.1f} s; energy distance to the test split: FDRL samples {test_e:.4g}, "
        f"source {test_src:.4g} ({summary['test_improvement']:.1f}× closer; best validation {best['val_energy']:.4g} at step "
        f"{best['step']}); run folder {out}",
        quiet,
    )
    return summary
