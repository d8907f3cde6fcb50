"""FDRL training (Algorithm 1 of the paper) behind ``flowdsl train SPEC`` for ``objective fdrl``.

One iteration t (batch B, the estimator r_θ, the objective's K, η, ν):

1. x_p: B training examples on the model scale (the batch indices of the training package's
   :class:`~flowdsl.runtime.training.schedule.BatchStream`; images get N(0, 0.03²) noise);
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

The pieces: :mod:`~flowdsl.runtime.objectives.fdrl.model` (settings, estimator + EMA + source),
:mod:`~flowdsl.runtime.objectives.fdrl.datasets` (data, classes, validation split),
:mod:`~flowdsl.runtime.objectives.fdrl.runs` (sampling, reloading a run),
:mod:`~flowdsl.runtime.objectives.fdrl.metrics` (metrics.csv, curves.png).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from flowdsl.compiler.kinds.fdrl import resolve_args
from flowdsl.errors import CheckpointError, DataError
from flowdsl.runtime.objectives.fdrl.datasets import load_data, split_validation
from flowdsl.runtime.objectives.fdrl.losses import bregman_loss
from flowdsl.runtime.objectives.fdrl.metrics import FDRLMetricsLog, plot_fdrl_curves
from flowdsl.runtime.objectives.fdrl.model import FDRLModel, ema_update, is_fdrl_spec, resolve_settings
from flowdsl.runtime.objectives.fdrl.runs import sample_fdrl, write_fdrl_samples
from flowdsl.runtime.objectives.fdrl.sampler import run_flow
from flowdsl.runtime.objectives.fdrl.sources import DataGaussianSource, PriorSource, gen, load_flow_into
from flowdsl.runtime.training.run_folder import clear_run_files, resume_point
from flowdsl.wording import plural

__all__ = ["train_fdrl"]


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def _eval_energy(model: FDRLModel, ref: Tensor, n: int, seed: int, batch: int) -> tuple[float, float]:
    """Energy distances (FDRL EMA samples, source samples) to reference data (model scale)."""
    from flowdsl.runtime.objectives.fdrl.evaluate import energy_distance

    x, x0 = sample_fdrl(model, n, seed=seed, batch=batch, return_start=True)
    if model.scale.image:
        return energy_distance(x, ref), energy_distance(x0.clamp(-1, 1), ref)
    return energy_distance(model.scale.to_data(x), model.scale.to_data(ref)), energy_distance(
        model.scale.to_data(x0), model.scale.to_data(ref)
    )


def _cpu_only(device: Any, precision: Any, where: str) -> None:
    """FDRL trains in float32 on the CPU: ``--device auto`` means the CPU here; ``cuda`` and
    ``--precision bf16-mixed`` are user errors (not silently ignored)."""
    from flowdsl.runtime.training.device import resolve_device

    if str(device) != "auto" and resolve_device(str(device)).type != "cpu":
        raise DataError(f"objective fdrl trains on the CPU only; --device {device} is not supported", filename=where)
    if precision not in (None, "32"):
        raise DataError(f"objective fdrl trains in float32; --precision {precision} is not supported", filename=where)


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
        fdrl: :class:`~flowdsl.runtime.objectives.fdrl.model.FDRLSettings` fields (ema, kappa, source_data,
            source_classes, data_classes, source_checkpoint, source_temperature, data_noise, eval_n, eval_batch).

    Returns:
        the run summary (also written to ``summary.json``).
    """
    from flowdsl.runtime.training.models import ModelFactory, as_spec

    spec = as_spec(spec, ModelFactory())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DataError(
            "FDRL training runs in a single process; start it without torchrun",
            filename=getattr(spec, "filename", "train"),
        )
    if not is_fdrl_spec(spec):
        raise DataError(
            f"spec {spec.name!r} has objective {spec.objective.name!r}; train_fdrl trains objective fdrl",
            filename=spec.filename,
        )
    _cpu_only(overrides.pop("device", "auto"), overrides.get("precision"), spec.filename)
    if overrides.get("invertible_memory"):
        raise DataError(
            "--invertible-memory applies to maximum-likelihood training of a flow; objective fdrl trains a "
            "density-ratio estimator, which has no inverse to recompute from",
            filename=spec.filename,
        )
    prev_threads = torch.get_num_threads()
    from flowdsl.runtime.training.run_folder import RunLock

    out = Path(out) if out is not None else Path("runs") / str(spec.name)
    try:
        with RunLock(out):  # one training per run folder (see runtime/training/run_folder.py)
            return _train(spec, data, steps, out, resume, overwrite, quiet, dict(fdrl or {}), overrides)
    finally:
        torch.set_num_threads(prev_threads)


def _train(spec, data, steps, out, resume, overwrite, quiet, fdrl_over, overrides) -> dict[str, Any]:
    from flowdsl.runtime.training.checkpoint import (
        check_spec,
        read_checkpoint,
        restore,
        save_checkpoint,
        save_safetensors,
    )
    from flowdsl.runtime.training.config import resolve_config
    from flowdsl.runtime.training.schedule import BatchStream, lr_at

    t_start = time.time()
    out = Path(out) if out is not None else Path("runs") / str(spec.name)
    last_path = resume_point(out, resume, overwrite)  # removes nothing: a fresh start clears below
    ckpt = None
    if last_path is not None:
        ckpt = read_checkpoint(last_path)
        check_spec(ckpt, spec, str(last_path))
        stored = dict(ckpt.get("config") or {})
        cfg = resolve_config(
            stored={k: v for k, v in stored.items() if k != "fdrl"}, data=data, steps=steps, **overrides
        )
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
    train_ds, val_ds = split_validation(full, cfg.val_fraction, cfg.val_max)
    ref_ds = val_ds if val_ds is not None else test
    _say(
        f"data {cfg.data}: {len(train_ds)} train, {len(val_ds) if val_ds is not None else 0} validation, "
        f"{len(test)} test; "
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
    opt = torch.optim.AdamW(
        model.estimator.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay
    )
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
        f"fdrl {spec.name}: estimator {args.estimator['call']}"
        f"({', '.join(f'{k}={v}' for k, v in args.estimator['args'].items())}) "
        f"with {n_params:,} parameters, head {model.estimator.head}; loss {args.loss}, divergence {args.divergence}; "
        f"source {model.source.describe()}; K={args.steps} (+κ={kappa} when sampling), "
        f"η={args.step_size:g}, ν={args.noise:g}; "
        f"{plural(cfg.steps, 'step')} of batch {cfg.batch}, lr {cfg.lr:g}, EMA {settings.ema:g}, "
        f"{plural(cfg.threads, 'thread')}",
        quiet,
    )

    if last_path is None:  # a fresh start, all checked: no stale best.pt or metrics from an earlier run
        clear_run_files(out)
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
                    msg += (
                        f"  | energy distance to validation: samples {row['val_energy']:.4g}, "
                        f"source {row['source_energy']:.4g} (best {best['val_energy']:.4g} @ {best['step']})"
                    )
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
    if (out / "best.pt").exists():
        bck = read_checkpoint(out / "best.pt")
        restore(model, bck)
        save_safetensors(
            out / "weights.safetensors",
            model.state_dict(),
            spec_text=spec.source,
            spec_sha256=spec.sha256,
            step=int(bck["step"]),
            spec_name=str(spec.name),
        )
    test_e, test_src = _eval_energy(
        model, model.scale.from_raw(test.x), settings.eval_n, eval_seed + 1, settings.eval_batch
    )
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
        write_fdrl_samples(
            model,
            xs,
            out / "samples.png",
            data=None if model.scale.image else test.x,
            title=f"{spec.name}: {args.steps + kappa} FDRL steps from {model.source_kind}",
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    _say(
        f"done: {plural(step, 'step')} in {summary['seconds']:.1f} s; "
        f"energy distance to the test split: FDRL samples {test_e:.4g}, "
        f"source {test_src:.4g} ({summary['test_improvement']:.1f}× closer; "
        f"best validation {best['val_energy']:.4g} at step "
        f"{best['step']}); run folder {out}",
        quiet,
    )
    return summary
