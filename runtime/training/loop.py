"""The training loop of ``objective mle`` (maximum likelihood): :func:`train_mle`.

``flowdsl train`` and :func:`flowdsl.runtime.training.train` reach it through the objective
registry (:mod:`flowdsl.runtime.objectives`), whose ``mle`` runtime calls it.

One update (step t, global batch B, D dimensions per example):

1. the B indices are positions ``[t·B, (t+1)·B)`` of an endless stream of epoch permutations
   (epoch e is ``randperm(N)`` seeded by (seed, e)); the dequantisation noise comes from a
   generator seeded by (seed, t). Both are pure functions of (seed, t), so a resumed run sees
   exactly the batches it would have seen, and N processes can each take their shard;
2. modules with ``set_step`` (the spike_slab prior's annealing) are told t;
3. loss = −mean log p(x) / D (nats/dim of x on [0, 1)); for a spec that declares a ``context``
   −mean log p(x | c) / D with each example's context from the data; backward; the global gradient norm is
   clipped to ``clip``; a non-finite norm skips the update (20 in a row abort the run);
4. AdamW with the learning rate of a linear warm-up over ``warmup`` steps (at most a fifth of
   the run) followed by a cosine decay to ``min_lr_ratio·lr`` (or constant); weight decay only
   on tensors with ndim ≥ 2 (not on biases, ActNorm or prior parameters).

Before the first update the model sees one batch of up to 512 training examples in training
mode without gradients, which runs data-dependent initialisation (ActNorm) identically in every
process. Every ``eval_every`` steps the validation split (a fixed 10 % of the train split, at
most 2,000 examples) and the test split are scored in bits/dim with fixed dequantisation noise;
the best validation score's state goes to ``best.pt`` — for priors that anneal (spike_slab),
only evaluations after the annealing has ended are candidates, so the chosen model has the
prior the spec describes. ``last.pt`` is written every
``checkpoint_every`` steps, at evaluations and at the end. At the end the best weights are
also written as ``weights.safetensors`` and scored on the test split.

Devices and precision (``device``, ``precision``; :mod:`.device`, :mod:`.precision`): the model
(with its prior) is moved to the device before the optimizer is made, so AdamW's state lives
there too (a resumed optimizer state follows the parameters); batches are dequantised on the CPU
from the seeded generators and then moved, so a run's batches do not depend on the device.
Under torchrun each process computes on ``cuda:$LOCAL_RANK`` (or the CPU) and the process group
uses nccl only for CUDA (:mod:`.distributed`). ``bf16-mixed`` runs the conditioner networks under
bfloat16 autocast; weights, log-dets and the prior stay float32.

Determinism: parameters come from ``flowdsl.compile(spec, seed)``, every random draw of the loop
from seeded generators, and the process uses ``threads`` intra-op threads (default 1), so two
runs with the same seed, data and settings produce the same weights on the same machine.

The run folder is locked (``flock`` on ``RUN/.lock``) for the whole run; ``--resume`` needs a
``last.pt`` and refuses run-defining settings other than the stored ones unless told
``override_settings``; a fresh start clears an old run only after spec, settings, data and model
have been checked. ``--max-time`` bounds everything from the call on, evaluations and the final
report included (:mod:`.budget`).

The pieces around the loop: :mod:`.models` (specs to models, :func:`load_model`),
:mod:`.run_folder` (lock, resume point, settings, summary), :mod:`.run_checkpoints` (writes,
the last good checkpoint), :mod:`.run_data` (splits, dequantised evaluation data),
:mod:`.schedule` (learning rate, batch stream), :mod:`.evaluation`, :mod:`.budget` (time limit,
evaluation progress), :mod:`.progress` and :mod:`.final_report`.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from flowdsl.errors import DataError, FlowDSLError, NotAvailableError
from flowdsl.runtime.data import nats_to_bits_per_dim
from flowdsl.runtime.priors.base import Prior
from flowdsl.runtime.training.budget import Evaluator, TimeBudget, command_start_time
from flowdsl.runtime.training.checkpoint import (
    check_spec,
    read_checkpoint,
    remove_stale_temp_files,
    restore,
)
from flowdsl.runtime.training.config import resolve_config, resume_setting_changes
from flowdsl.runtime.training.device import resolve_device
from flowdsl.runtime.training.distributed import DistInfo, all_reduce_sum, barrier, init_from_env, shard_range, shutdown
from flowdsl.runtime.training.evaluation import evaluate_bpd, log_prob
from flowdsl.runtime.training.final_report import final_report
from flowdsl.runtime.training.guards import InterruptFlag, raise_nonfinite
from flowdsl.runtime.training.metrics import MetricsLog, prepare_plotting
from flowdsl.runtime.training.models import ModelFactory, as_spec, load_model
from flowdsl.runtime.training.precision import autocast_conditioners
from flowdsl.runtime.training.progress import Progress, say
from flowdsl.runtime.training.recompute import memory_saving_model, require_one_process
from flowdsl.runtime.training.run_checkpoints import RunCheckpoints
from flowdsl.runtime.training.run_data import load_run_data
from flowdsl.runtime.training.run_folder import (
    RUN_FILES,
    RunLock,
    clear_run_files,
    resume_point,
    write_run_settings,
)
from flowdsl.runtime.training.schedule import BatchStream, _gen, lr_at
from flowdsl.wording import plural

# ModelFactory, as_spec, load_model, evaluate_bpd, lr_at and BatchStream live in models,
# evaluation and schedule; they stay importable from here, where they used to be defined.
__all__ = ["ModelFactory", "train_mle", "load_model", "evaluate_bpd", "lr_at", "BatchStream", "as_spec"]


class _LogProb(nn.Module):
    """The module DDP wraps: forward(x, context) = model.log_prob(x[, context=context])."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        return log_prob(self.model, x, context)


def _set_step(model: nn.Module, step: int) -> None:
    """Tell the prior the training step (its declared protocol, ``Prior.set_step``)."""
    if isinstance(model.prior, Prior):
        model.prior.set_step(step)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return groups


def _unused_parameters(model: nn.Module, x: Tensor, context: Optional[Tensor] = None) -> bool:
    """Whether some trainable parameter gets no gradient (DDP must then search for them)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return False
    lp = log_prob(model, x, context)
    grads = torch.autograd.grad(lp.sum(), params, allow_unused=True)
    return any(g is None for g in grads)


def _prepare_out(out: Path, resume: bool, overwrite: bool, info: DistInfo) -> Optional[Path]:
    """The checkpoint to resume from (or None); refuses to clobber a run unless told to, and
    to start afresh on ``resume``. Nothing is removed here (see :func:`_clear_for_fresh_start`)."""
    return resume_point(out, resume, overwrite)


def _clear_for_fresh_start(out: Path, info: DistInfo) -> None:
    """A fresh start, once spec, settings and data have been checked: every process has looked
    at the folder before the main one clears it."""
    barrier(info)
    if info.main:
        clear_run_files(out)
    barrier(info)


def train_mle(
    spec: Any,
    data: Optional[str] = None,
    steps: Optional[int] = None,
    out: Optional[str | os.PathLike] = None,
    resume: bool = False,
    *,
    overwrite: bool = False,
    override_settings: bool = False,
    quiet: bool = False,
    factory: Optional[ModelFactory] = None,
    device: str | torch.device = "auto",
    **overrides: Any,
) -> dict[str, Any]:
    """Train the flow of an ``objective mle`` spec by maximum likelihood; returns the run's summary.

    Args:
        spec: a parsed spec (``flowdsl.load``), a path to a spec file, or spec text.
        data: data set name or path (default: the spec's ``train(data=...)``).
        steps: number of updates (default: the spec's ``train(steps=...)``).
        out: run folder (default ``runs/<spec name>``); gets last.pt, best.pt,
            weights.safetensors, metrics.csv, curves.png, samples.png, summary.json, spec.flow.
        resume: continue from ``out/last.pt`` (exactly; without one it is a CheckpointError, never
            a fresh start). The run's stored settings apply; given ones that change what the run
            trains (:data:`~flowdsl.runtime.training.config.RUN_DEFINING`: data, batch, lr, ...)
            are refused unless ``override_settings``.
        overwrite: start again in a folder that already holds a checkpoint (everything is
            checked before anything is removed).
        override_settings: let ``resume`` change run-defining settings; the change is recorded
            in the checkpoints (``extra["setting_changes"]``), config.json and summary.json.
        quiet: no progress output.
        factory: how specs are parsed and built (tests substitute a stand-in).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; under torchrun
            ``cuda:$LOCAL_RANK`` (:func:`~flowdsl.runtime.training.device.resolve_device`).
        overrides: any :class:`TrainConfig` field (batch, lr, seed, weight_decay, warmup, clip,
            eval_every, checkpoint_every, test_batch, schedule, val_fraction, threads, max_time,
            invertible_memory (the loss's backward recomputes activations from outputs; one
            process only), precision ("32" or "bf16-mixed"), ...).

    Returns:
        ``{"step", "best_step", "best_val_bpd", "test_bpd" (of the best weights), "final_test_bpd",
        "final_val_bpd", "train_bpd", "seconds", "out", "sparsity" (spike_slab), ...}``.

    Raises:
        NotAvailableError: the spec has another objective (:func:`flowdsl.runtime.training.train`
            dispatches to the runtime of each objective).
        DataError: missing data or data that does not fit the spec's input.
        CheckpointError: ``--resume`` from a corrupt checkpoint or one of another spec, or with
            nothing to resume; the run folder is in use by another training (it is locked while
            a run writes to it); a checkpoint could not be written (names the last good one).
        NumericalError: the loss, or the state about to be checkpointed, became NaN/Inf; names
            the step (and the first non-finite layer) and the last good checkpoint.
        KeyboardInterrupt: after Ctrl-C, once ``last.pt`` of the current step is written.
    """
    from flowdsl.runtime.data.arrays import remember_arrays

    # --max-time bounds everything from here on (from the process start for the flowdsl command)
    t_start = command_start_time() or time.time()
    factory = factory or ModelFactory()
    spec = as_spec(spec, factory)
    data = remember_arrays(data)  # numpy arrays / tensors: a label the run's config can store
    info = init_from_env(resolve_device(device if device is not None else "auto"))
    prev_threads = torch.get_num_threads()
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    prev_sigint = signal.getsignal(signal.SIGINT) if main_thread else None
    out = Path(out) if out is not None else Path("runs") / str(getattr(spec, "name", "run"))
    lock = None
    try:
        if info.main:
            lock = RunLock(out)  # before anything in the folder is looked at
            remove_stale_temp_files(out, RUN_FILES + ("spec.flow", "config.json"))
        return _train(
            spec, data, steps, out, resume, overwrite, override_settings, quiet, factory, overrides, info, t_start
        )
    except OSError as e:  # unwritable run folder, full disk, ...: a user error with the path
        where = e.filename or out or "the run folder"
        raise FlowDSLError(f"cannot write the run files: {e.strerror or e} ({where})", filename=str(where)) from None
    finally:
        if lock is not None:
            lock.release()
        if main_thread and prev_sigint is not None:
            signal.signal(signal.SIGINT, prev_sigint)  # also when the loop raised
        torch.set_num_threads(prev_threads)
        shutdown(info)


def _train(
    spec, data, steps, out, resume, overwrite, override_settings, quiet, factory, overrides, info: DistInfo, t_start
) -> dict[str, Any]:
    obj = getattr(getattr(spec, "objective", None), "name", "mle")
    if obj != "mle":
        raise NotAvailableError(
            f"train_mle trains objective mle; objective {obj!r} is trained by its own runtime "
            "(flowdsl.runtime.training.train and `flowdsl train` dispatch on the objective)",
            filename=getattr(spec, "filename", "<string>"),
            span=spec.objective.span,
            source=getattr(spec, "source", None),
        )
    last_path = _prepare_out(out, resume, overwrite, info)
    ckpt = None
    setting_changes: list[dict[str, Any]] = []
    if last_path is not None:
        ckpt = read_checkpoint(last_path)
        check_spec(ckpt, spec, str(last_path))
        setting_changes = resume_setting_changes(ckpt, {"data": data, **overrides}, override_settings, str(out))
        cfg = resolve_config(stored=ckpt.get("config") or {}, data=data, steps=steps, **overrides)
    else:
        cfg = resolve_config(spec, data=data, steps=steps, **overrides)
    from flowdsl.compiler.passes.check import check_run_sizes

    # flags and keyword arguments against the limits and the activation estimate, before allocating
    check_run_sizes(spec.graph, batch=cfg.batch, test_batch=cfg.test_batch, threads=cfg.threads)
    if cfg.invertible_memory:
        require_one_process(info.world, "train")
        if getattr(spec, "context", None) is not None:
            raise NotAvailableError(
                "--invertible-memory does not take a context yet: train a conditional spec without it",
                filename="train",
            )
        if cfg.precision != "32":  # the recomputing backward would rerun the nets in float32
            raise FlowDSLError("--precision bf16-mixed does not combine with --invertible-memory", filename="train")
    dev = info.device
    torch.set_num_threads(cfg.threads)
    if info.active and cfg.batch % info.world:
        raise DataError(f"batch {cfg.batch} is not divisible by the {info.world} processes", filename="train")

    # -- data ----------------------------------------------------------------------------
    run = load_run_data(spec, cfg)
    levels, dims = run.levels, run.dims
    for line in run.describe(cfg.data):
        say(line, quiet, info)

    # -- model and optimiser -------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    model = factory.build(spec, cfg.seed).to(dev)  # the prior is a submodule: it moves too
    model.train()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    stream = BatchStream(len(run.train), cfg.batch, cfg.seed)
    best = {"val_bpd": math.inf, "step": -1, "test_bpd": math.nan}
    start = 0
    if ckpt is not None:
        restore(model, ckpt, opt)
        start = int(ckpt["step"])
        rng = (ckpt.get("rng") or {}).get("torch")
        if isinstance(rng, Tensor):
            torch.set_rng_state(rng)
        best.update({k: v for k, v in (ckpt.get("extra") or {}).get("best", {}).items() if k in best})
        say(f"resumed {last_path} at step {start}", quiet, info)
    else:
        init_n = min(len(run.train), max(cfg.batch, 512))
        idx = torch.randperm(len(run.train), generator=_gen("init", cfg.seed))[:init_n]
        x0 = run.train_batch(idx, _gen("init-noise", cfg.seed)).to(dev)
        c0 = run.train_context(idx)
        with torch.no_grad():  # data-dependent initialisation (ActNorm), the same in every process
            model(x0) if c0 is None else model(x0, context=c0.to(dev))
    say(
        f"model {getattr(spec, 'name', '')}: {n_params:,} parameters; "
        f"{plural(cfg.steps, 'step')} of batch {cfg.batch}, lr {cfg.lr:g}, "
        f"weight decay {cfg.weight_decay:g}, {plural(info.world, 'process')} × {plural(cfg.threads, 'thread')} "
        f"on {dev}"
        + ("; bf16-mixed precision" if cfg.precision != "32" else "")
        + ("; invertible memory (backward recomputes activations)" if cfg.invertible_memory else ""),
        quiet,
        info,
    )

    if run.conditional:
        say(
            f"conditional: {getattr(spec.context, 'kind', 'a')} contexts from the data; every bits/dim below is "
            "conditional, -log2 p(x | c) per dimension",
            quiet,
            info,
        )
    # annealed modules (spike_slab) change the density until their schedule ends: only states
    # from then on are candidates for best.pt, so the selected model has the spec's prior
    anneal_until = int(model.prior.anneal) if isinstance(model.prior, Prior) else 0
    if anneal_until:
        say(f"annealing until step {anneal_until}: best.pt is chosen among evaluations from then on", quiet, info)
        if cfg.steps < anneal_until:
            say(
                f"warning: the run ends at step {cfg.steps}, before the prior's annealing ends (step {anneal_until}): "
                "no evaluation can be chosen for best.pt, and weights.safetensors will hold the last weights "
                f"(use at least --steps {anneal_until})",
                False,
                info,
            )

    # --invertible-memory: the loss goes through InvertibleMemory (same parameters); evaluation,
    # the non-finite guard and checkpoints keep using the plain model
    net: nn.Module = _LogProb(memory_saving_model(model, "train") if cfg.invertible_memory else model)
    if info.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        probe = run.train_batch(slice(None, 2), _gen("probe", cfg.seed)).to(dev)
        probe_c = run.train_context(slice(None, 2))
        probe_c = None if probe_c is None else probe_c.to(dev)
        ids = [dev.index] if dev.type == "cuda" else None
        net = DDP(net, device_ids=ids, find_unused_parameters=_unused_parameters(model, probe, probe_c))

    if ckpt is None:  # spec, settings, data and model are all fine: only now is an old run removed
        _clear_for_fresh_start(out, info)
    if setting_changes and ckpt is not None and setting_changes[-1]["step"] == start:
        say(
            f"settings changed on resume at step {start} (recorded in the run): {setting_changes[-1]['changes']}",
            quiet,
            info,
        )
    metrics = MetricsLog(out / "metrics.csv", enabled=info.main)
    if info.main:
        write_run_settings(out, spec, cfg, setting_changes)
    metrics.start(start if ckpt is not None else None)
    barrier(info)

    ckpts = RunCheckpoints(spec, model, opt, cfg, info, best, setting_changes, last_path, start)
    last_good = ckpts.last_good

    def checkpoint(path: Path, step: int) -> None:
        t0 = time.time()
        ckpts.write(path, step)
        budget.note_write(time.time() - t0)

    # --max-time bounds the whole command: the loop leaves time for what the end of the run needs
    budget = TimeBudget(t_start, cfg.max_time)
    if budget.deadline is not None and info.main:
        prepare_plotting()  # a first matplotlib import takes seconds: spend them now, inside the limit
    evaluator = Evaluator(model, cfg, run, info, budget, quiet)
    if run.val_eval_x is not None:
        evaluator.probe(run.val_eval_x, run.val_eval_c)
    else:
        evaluator.probe(run.test_eval_x, run.test_eval_c)
    n_val_eval = len(run.val_eval_x) if run.val_eval_x is not None else 0
    n_eval = n_val_eval + len(run.test_eval_x)  # one evaluation during the run
    # the end: a last evaluation, the final report's scoring of the last and the best weights on
    # the whole test split (when evaluations score part of it), the sparsity report, the samples
    n_end = n_eval + (2 * len(run.test_x) if len(run.test_eval_x) < len(run.test_x) else 0)
    n_end += min(1000, len(run.test_x)) if hasattr(model.prior, "sparsity_report") else 0
    n_end += 2 * cfg.sample_n  # sampling runs the inverse: counted as two evaluated examples each
    last_eval: dict[str, Any] = {}

    log_every = cfg.log_every or max(1, cfg.steps // 50)
    interrupt = InterruptFlag()
    progress = Progress(cfg.steps, start, quiet, info)
    acc_loss, acc_n, last_gn, skipped = 0.0, 0, math.nan, 0
    bad_in_a_row = 0
    step = start
    stopped_early = False
    last_ckpt_step = start if ckpt is not None else -1
    shard = shard_range(cfg.batch, info)
    while step < cfg.steps:
        t_step = time.time()
        _set_step(model, step)
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = stream.indices(step)
        x = run.train_batch(idx, _gen("noise", cfg.seed, step))[shard].to(dev, non_blocking=True)
        c = run.train_context(idx)
        c = None if c is None else c[shard].to(dev, non_blocking=True)
        with autocast_conditioners(model, dev, cfg.precision):
            lp = net(x) if c is None else net(x, c)
        loss = -lp.mean() / dims
        if cfg.invertible_memory and not bool(torch.isfinite(loss)):  # one process: stop before the
            raise_nonfinite(
                model, x, step, float(loss.detach()), out, last_good(), context=c
            )  # recomputing backward inverts NaN/Inf
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip) if n_params else torch.zeros(())
        if torch.isfinite(gn):
            opt.step()
            bad_in_a_row = 0
        else:
            skipped += 1
            bad_in_a_row += 1
            if bad_in_a_row >= 20:
                raise FlowDSLError(
                    f"training diverged: 20 updates in a row with a non-finite gradient (step {step})",
                    filename=str(out),
                )
        lv = loss.detach().reshape(1).to(torch.float64)
        all_reduce_sum(lv, info)
        if not math.isfinite(float(lv)):  # every rank sees the same reduced value, so all stop
            raise_nonfinite(model, x, step, float(lv), out, last_good(), context=c)
        acc_loss += float(lv) / info.world
        acc_n += 1
        last_gn = float(gn)
        step += 1

        budget.note_step(time.time() - t_step)
        timed_out = False
        if cfg.max_time > 0 or interrupt.requested or info.active:  # every process stops at the same step
            next_eval = n_eval if (step + 1) % cfg.eval_every == 0 else 0
            late = info.main and budget.must_stop(n_end + next_eval)
            flag = torch.tensor([float(late or interrupt.requested)], dtype=torch.float64, device=dev)
            timed_out = bool(all_reduce_sum(flag, info)[0] > 0)
        final = step == cfg.steps or timed_out
        do_eval = step % cfg.eval_every == 0 or final
        row: dict[str, Any] = {}
        if step % log_every == 0 or do_eval:
            tl = acc_loss / max(acc_n, 1)
            row = {
                "step": step,
                "lr": lr,
                "train_loss": tl,
                "train_bpd": float(nats_to_bits_per_dim(tl, levels)),
                "grad_norm": last_gn,
            }
            acc_loss, acc_n = 0.0, 0
        if do_eval:
            _set_step(model, step)
            vb, vn = evaluator.score("validation", run.val_eval_x, run.val_eval_c)
            tb, tn = evaluator.score("test", run.test_eval_x, run.test_eval_c)
            last_eval = {"step": step, "val_bpd": vb, "val_n": vn, "test_bpd": tb, "test_n": tn}
            row.update(val_bpd=vb, test_bpd=tb)
            score, complete = (vb, vn == n_val_eval) if run.val_x is not None else (tb, tn == len(run.test_eval_x))
            improved = complete and step >= anneal_until and math.isfinite(score) and score < best["val_bpd"]
            if improved:
                best.update(val_bpd=score, step=step, test_bpd=tb)
                checkpoint(out / "best.pt", step)  # before last.pt: last.pt's "best" always exists
        if row:
            row["seconds"] = round(time.time() - t_start, 3)
            metrics.write(**row)
            progress.row(step, row, lr, do_eval, best)
        progress.tick()
        if step % cfg.checkpoint_every == 0 or do_eval:
            checkpoint(out / "last.pt", step)
            last_ckpt_step = step
        if timed_out and step < cfg.steps:
            stopped_early = True
            if interrupt.requested:
                say(f"interrupted (Ctrl-C) at step {step}", quiet, info)
            else:
                say(
                    f"time limit of {cfg.max_time:g} s: training stops at step {step}, leaving "
                    f"{max(budget.left(), 0.0):.1f} s for the final evaluation and report",
                    quiet,
                    info,
                )
            break
    interrupt.restore()
    progress.close()
    if step != last_ckpt_step:
        checkpoint(out / "last.pt", step)
    barrier(info)
    if interrupt.requested:
        import shlex

        say(
            f"checkpoint of step {step} written to {out / 'last.pt'}; continue with:\n"
            f"  flowdsl train {shlex.quote(str(out))} --resume",
            quiet,
            info,
        )
        raise KeyboardInterrupt

    return final_report(
        spec=spec,
        model=model,
        data=run,
        cfg=cfg,
        info=info,
        out=out,
        best=best,
        step=step,
        stopped_early=stopped_early,
        skipped=skipped,
        anneal_until=anneal_until,
        n_params=n_params,
        t_start=t_start,
        quiet=quiet,
        setting_changes=setting_changes,
        evaluator=evaluator,
        last_eval=last_eval,
    )
