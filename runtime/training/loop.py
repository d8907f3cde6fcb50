"""The training loop behind ``flowdsl train`` (maximum likelihood), and :func:`load_model`.

One update (step t, global batch B, D dimensions per example):

1. the B indices are positions ``[t·B, (t+1)·B)`` of an endless stream of epoch permutations
   (epoch e is ``randperm(N)`` seeded by (seed, e)); the dequantisation noise comes from a
   generator seeded by (seed, t). Both are pure functions of (seed, t), so a resumed run sees
   exactly the batches it would have seen, and N processes can each take their shard;
2. modules with ``set_step`` (the spike_slab prior's annealing) are told t;
3. loss = −mean log p(x) / D (nats/dim of x on [0, 1)); backward; the global gradient norm is
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

Determinism: parameters come from ``flowdsl.compile(spec, seed)``, every random draw of the loop
from seeded generators, and the process uses ``threads`` intra-op threads (default 1), so two
runs with the same seed, data and settings produce the same weights on the same machine.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from flowdsl.errors import CheckpointError, DataError, FlowDSLError, NotAvailableError
from flowdsl.runtime.data import Dataset, dequantize, load_for_spec, nats_to_bits_per_dim
from flowdsl.runtime.training.checkpoint import (
    check_spec,
    read_checkpoint,
    resolve_checkpoint_path,
    restore,
    save_checkpoint,
    save_safetensors,
)
from flowdsl.runtime.training.config import TrainConfig, resolve_config
from flowdsl.runtime.training.schedule import BatchStream, _gen, lr_at  # noqa: F401 (BatchStream, lr_at re-exported)
from flowdsl.runtime.training.guards import InterruptFlag, raise_nonfinite
from flowdsl.runtime.training.distributed import DistInfo, all_reduce_sum, barrier, init_from_env, shard_range, shutdown
from flowdsl.runtime.training.metrics import MetricsLog, plot_curves
from flowdsl.runtime.training.recompute import memory_saving_model, require_one_process

__all__ = ["ModelFactory", "train", "load_model", "evaluate_bpd", "lr_at", "BatchStream", "as_spec"]


class ModelFactory:
    """How specs are read and models built (``flowdsl.parse`` / ``flowdsl.compile``)."""

    def parse(self, text: str, filename: str = "<string>") -> Any:
        import flowdsl

        return flowdsl.parse(text, filename=filename)

    def load(self, path: str | os.PathLike) -> Any:
        import flowdsl

        return flowdsl.load(path)

    def build(self, spec: Any, seed: int) -> nn.Module:
        import flowdsl

        return flowdsl.compile(spec, seed=seed)


def as_spec(spec: Any, factory: ModelFactory) -> Any:
    """A parsed spec from a spec object, a path to a spec file, or spec text."""
    if isinstance(spec, (str, os.PathLike)):
        s = os.fspath(spec)
        if isinstance(spec, os.PathLike) or ("\n" not in s and "{" not in s):
            return factory.load(s)  # a path (a missing file is a located "cannot read" error)
        return factory.parse(s)
    return spec


def _spec_sha(spec: Any) -> str:
    sha = getattr(spec, "sha256", None)
    return sha if isinstance(sha, str) else hashlib.sha256(getattr(spec, "source", "").encode("utf-8")).hexdigest()


class _LogProb(nn.Module):
    """The module DDP wraps: forward(x) = model.log_prob(x)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.log_prob(x)


def _set_step(model: nn.Module, step: int) -> None:
    for m in model.modules():
        fn = getattr(m, "set_step", None)
        if callable(fn) and m is not model:
            fn(step)


@torch.no_grad()
def evaluate_bpd(model: nn.Module, x01: Tensor, dims: int, levels: Optional[int], batch: int, info: DistInfo = DistInfo()) -> float:
    """Mean bits/dim of already dequantised data ``x01`` (strided shards under torchrun)."""
    was = model.training
    model.eval()
    try:
        xs = x01[info.rank :: info.world] if info.active else x01
        total = torch.zeros(2, dtype=torch.float64)
        for i in range(0, len(xs), batch):
            lp = model.log_prob(xs[i : i + batch]).to(torch.float64)
            total[0] += lp.sum()
            total[1] += lp.numel()
        all_reduce_sum(total, info)
    finally:
        model.train(was)
    if total[1] == 0:
        return float("nan")
    nll = float(-total[0] / total[1]) / dims
    return float(nats_to_bits_per_dim(nll, levels))


def _say(msg: str, quiet: bool, info: DistInfo) -> None:
    if not quiet and info.main:
        print(msg, flush=True)


def _split_validation(ds: Dataset, cfg: TrainConfig) -> tuple[Dataset, Optional[Dataset]]:
    n_val = min(cfg.val_max, int(round(cfg.val_fraction * len(ds))))
    if n_val <= 0 or n_val >= len(ds):
        return ds, None
    perm = np.random.Generator(np.random.PCG64(0)).permutation(len(ds))
    val_idx = np.sort(perm[-n_val:])
    tr_idx = np.sort(perm[:-n_val])
    return ds.subset(tr_idx, "train"), ds.subset(val_idx, "val")


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return groups


def _unused_parameters(model: nn.Module, x: Tensor) -> bool:
    """Whether some trainable parameter gets no gradient (DDP must then search for them)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return False
    lp = model.log_prob(x)
    grads = torch.autograd.grad(lp.sum(), params, allow_unused=True)
    return any(g is None for g in grads)


_RUN_FILES = ("last.pt", "best.pt", "weights.safetensors", "metrics.csv", "curves.png", "samples.png", "summary.json")


def _prepare_out(out: Path, resume: bool, overwrite: bool, info: DistInfo) -> Optional[Path]:
    """The checkpoint to resume from (or None); refuses to clobber a run unless told to."""
    last = out / "last.pt"
    if resume and last.exists():
        return last
    if not resume and last.exists() and not overwrite:
        raise CheckpointError(
            "run folder already holds a checkpoint; pass --resume to continue it or --overwrite to start again",
            filename=str(out),
        )
    barrier(info)  # every rank has looked before rank 0 clears the folder
    if info.main:  # a fresh start: no stale best.pt or metrics from an earlier run
        for name in _RUN_FILES:
            try:
                (out / name).unlink()
            except FileNotFoundError:
                pass
    barrier(info)
    return None


def train(
    spec: Any,
    data: Optional[str] = None,
    steps: Optional[int] = None,
    out: Optional[str | os.PathLike] = None,
    resume: bool = False,
    *,
    overwrite: bool = False,
    quiet: bool = False,
    factory: Optional[ModelFactory] = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train the flow of ``spec`` by maximum likelihood; returns the run's summary.

    Args:
        spec: a parsed spec (``flowdsl.load``), a path to a spec file, or spec text.
        data: data set name or path (default: the spec's ``train(data=...)``).
        steps: number of updates (default: the spec's ``train(steps=...)``).
        out: run folder (default ``runs/<spec name>``); gets last.pt, best.pt,
            weights.safetensors, metrics.csv, curves.png, samples.png, summary.json, spec.flow.
        resume: continue from ``out/last.pt`` (exactly; a fresh start when there is none).
        overwrite: start again in a folder that already holds a checkpoint.
        quiet: no progress output.
        factory: how specs are parsed and built (tests substitute a stand-in).
        overrides: any :class:`TrainConfig` field (batch, lr, seed, weight_decay, warmup, clip,
            eval_every, checkpoint_every, test_batch, schedule, val_fraction, threads, max_time,
            invertible_memory (the loss's backward recomputes activations from outputs; one
            process only), ...).

    Returns:
        ``{"step", "best_step", "best_val_bpd", "test_bpd" (of the best weights), "final_test_bpd",
        "final_val_bpd", "train_bpd", "seconds", "out", "sparsity" (spike_slab), ...}``.

    Raises:
        DataError: missing data or data that does not fit the spec's input.
        CheckpointError: ``--resume`` from a corrupt checkpoint or one of another spec.
        NumericalError: the loss became NaN/Inf; names the step and the first non-finite layer.
        KeyboardInterrupt: after Ctrl-C, once ``last.pt`` of the current step is written.
    """
    factory = factory or ModelFactory()
    spec = as_spec(spec, factory)
    info = init_from_env()
    prev_threads = torch.get_num_threads()
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    prev_sigint = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        return _train(spec, data, steps, out, resume, overwrite, quiet, factory, overrides, info)
    except OSError as e:  # unwritable run folder, full disk, ...: a user error with the path
        where = e.filename or out or "the run folder"
        raise FlowDSLError(f"cannot write the run files: {e.strerror or e} ({where})", filename=str(where)) from None
    finally:
        if main_thread and prev_sigint is not None:
            signal.signal(signal.SIGINT, prev_sigint)  # also when the loop raised
        torch.set_num_threads(prev_threads)
        shutdown(info)


def _train(spec, data, steps, out, resume, overwrite, quiet, factory, overrides, info: DistInfo) -> dict[str, Any]:
    t_start = time.time()
    obj = getattr(getattr(spec, "objective", None), "name", "mle")
    if obj != "mle":
        loc = getattr(spec.objective, "loc", None)
        from flowdsl.errors import Span

        raise NotAvailableError(
            f"this trainer optimises objective mle; objective {obj!r} has its own training procedure"
            + (" (flowdsl.runtime.fdrl.train.train_fdrl; the `flowdsl train` command dispatches there)" if obj == "fdrl" else ""),
            filename=getattr(spec, "filename", "<string>"),
            span=Span(loc.line, loc.column, loc.end_line, loc.end_column) if loc is not None else None,
            source=getattr(spec, "source", None),
        )
    out = Path(out) if out is not None else Path("runs") / str(getattr(spec, "name", "run"))
    last_path = _prepare_out(out, resume, overwrite, info)
    ckpt = None
    if last_path is not None:
        ckpt = read_checkpoint(last_path)
        check_spec(ckpt, spec, str(last_path))
        cfg = resolve_config(stored=ckpt.get("config") or {}, data=data, steps=steps, **overrides)
    else:
        cfg = resolve_config(spec, data=data, steps=steps, **overrides)
    if cfg.invertible_memory:
        require_one_process(info.world, "train")
    torch.set_num_threads(cfg.threads)
    if info.active and cfg.batch % info.world:
        raise DataError(f"batch {cfg.batch} is not divisible by the {info.world} processes", filename="train")

    # -- data ----------------------------------------------------------------------------
    full = load_for_spec(spec, cfg.data, "train", seed=cfg.seed)
    test = load_for_spec(spec, cfg.data, "test", seed=cfg.seed)
    train_ds, val_ds = _split_validation(full, cfg)
    levels = train_ds.levels
    dims = train_ds.dims
    mode = getattr(spec, "dequantize", "uniform") if levels is not None else "none"
    val_x = dequantize(val_ds.x, levels, mode, _gen("eval-noise", "val")) if val_ds is not None else None
    test_eval = test if not cfg.eval_max or len(test) <= cfg.eval_max else test.subset(torch.arange(cfg.eval_max))
    test_x = dequantize(test.x, levels, mode, _gen("eval-noise", "test"))
    test_eval_x = test_x[: len(test_eval)]
    _say(
        f"data {cfg.data}: {len(train_ds)} train, {len(val_ds) if val_ds is not None else 0} validation, {len(test)} test; "
        f"shape {tuple(train_ds.shape)}, {'levels ' + str(levels) if levels else 'real'}; dequantize {mode}",
        quiet,
        info,
    )
    for note in full.notes:
        _say(f"  {note}", quiet, info)

    # -- model and optimiser -------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    model = factory.build(spec, cfg.seed)
    model.train()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    stream = BatchStream(len(train_ds), cfg.batch, cfg.seed)
    best = {"val_bpd": math.inf, "step": -1, "test_bpd": math.nan}
    start = 0
    if ckpt is not None:
        restore(model, ckpt, opt)
        start = int(ckpt["step"])
        rng = (ckpt.get("rng") or {}).get("torch")
        if isinstance(rng, Tensor):
            torch.set_rng_state(rng)
        best.update({k: v for k, v in (ckpt.get("extra") or {}).get("best", {}).items() if k in best})
        _say(f"resumed {last_path} at step {start}", quiet, info)
    else:
        init_n = min(len(train_ds), max(cfg.batch, 512))
        idx = torch.randperm(len(train_ds), generator=_gen("init", cfg.seed))[:init_n]
        x0 = dequantize(train_ds.x[idx], levels, mode, _gen("init-noise", cfg.seed))
        with torch.no_grad():
            model(x0)  # data-dependent initialisation (ActNorm), the same in every process
    _say(f"model {getattr(spec, 'name', '')}: {n_params:,} parameters; {cfg.steps} steps of batch {cfg.batch}, lr {cfg.lr:g}, "
         f"weight decay {cfg.weight_decay:g}, {info.world} process(es) × {cfg.threads} thread(s)"
         + ("; invertible memory (backward recomputes activations)" if cfg.invertible_memory else ""), quiet, info)

    # annealed modules (spike_slab) change the density until their schedule ends: only states
    # from then on are candidates for best.pt, so the selected model has the spec's prior
    anneal_until = max(
        [int(getattr(m, "anneal", 0) or 0) for m in model.modules() if m is not model and callable(getattr(m, "set_step", None))],
        default=0,
    )
    if anneal_until:
        _say(f"annealing until step {anneal_until}: best.pt is chosen among evaluations from then on", quiet, info)

    # --invertible-memory: the loss goes through InvertibleMemory (same parameters); evaluation,
    # the non-finite guard and checkpoints keep using the plain model
    net: nn.Module = _LogProb(memory_saving_model(model, "train") if cfg.invertible_memory else model)
    if info.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        probe = dequantize(train_ds.x[:2], levels, mode, _gen("probe", cfg.seed))
        net = DDP(net, find_unused_parameters=_unused_parameters(model, probe))

    metrics = MetricsLog(out / "metrics.csv", enabled=info.main)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "spec.flow").write_text(getattr(spec, "source", ""), encoding="utf-8")
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    metrics.start(start if ckpt is not None else None)
    barrier(info)

    def checkpoint(path: Path, step: int) -> None:
        if not info.main:
            return
        save_checkpoint(
            path,
            spec_text=getattr(spec, "source", ""),
            spec_sha256=_spec_sha(spec),
            spec_name=str(getattr(spec, "name", "")),
            spec_filename=str(getattr(spec, "filename", "")),
            step=step,
            model_state=model.state_dict(),
            optimizer_state=opt.state_dict(),
            rng={"torch": torch.get_rng_state()},
            config=cfg.to_dict(),
            extra={"best": dict(best), "world": info.world},
        )

    log_every = cfg.log_every or max(1, cfg.steps // 50)
    use_tqdm = False
    bar = None
    if not quiet and info.main and sys.stderr.isatty():
        try:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=start, dynamic_ncols=True, unit="step")
            use_tqdm = True
        except ImportError:  # pragma: no cover - tqdm is optional
            pass

    interrupt = InterruptFlag()
    acc_loss, acc_n, last_gn, skipped = 0.0, 0, math.nan, 0
    bad_in_a_row = 0
    t_loop = time.time()
    last_print = t_loop
    step = start
    stopped_early = False
    last_ckpt_step = start if ckpt is not None else -1
    shard = shard_range(cfg.batch, info)
    while step < cfg.steps:
        _set_step(model, step)
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = stream.indices(step)
        x = dequantize(train_ds.x[idx], levels, mode, _gen("noise", cfg.seed, step))[shard]
        lp = net(x)
        loss = -lp.mean() / dims
        if cfg.invertible_memory and not bool(torch.isfinite(loss)):  # one process: stop before the
            raise_nonfinite(model, x, step, float(loss.detach()), out)  # recomputing backward inverts NaN/Inf
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
                raise FlowDSLError(f"training diverged: 20 updates in a row with a non-finite gradient (step {step})", filename=str(out))
        lv = loss.detach().reshape(1).to(torch.float64)
        all_reduce_sum(lv, info)
        if not math.isfinite(float(lv)):  # every rank sees the same reduced value, so all stop
            raise_nonfinite(model, x, step, float(lv), out)
        acc_loss += float(lv) / info.world
        acc_n += 1
        last_gn = float(gn)
        step += 1

        timed_out = False
        if cfg.max_time > 0 or interrupt.requested or info.active:  # every process stops at the same step
            late = cfg.max_time > 0 and time.time() - t_start > cfg.max_time and info.main
            flag = torch.tensor([float(late or interrupt.requested)], dtype=torch.float64)
            timed_out = bool(all_reduce_sum(flag, info)[0] > 0)
        final = step == cfg.steps or timed_out
        do_eval = step % cfg.eval_every == 0 or final
        row: dict[str, Any] = {}
        if step % log_every == 0 or do_eval:
            tl = acc_loss / max(acc_n, 1)
            row = {"step": step, "lr": lr, "train_loss": tl, "train_bpd": float(nats_to_bits_per_dim(tl, levels)), "grad_norm": last_gn}
            acc_loss, acc_n = 0.0, 0
        if do_eval:
            _set_step(model, step)
            vb = evaluate_bpd(model, val_x, dims, levels, cfg.test_batch, info) if val_x is not None else math.nan
            tb = evaluate_bpd(model, test_eval_x, dims, levels, cfg.test_batch, info)
            row.update(val_bpd=vb, test_bpd=tb)
            score = vb if val_x is not None else tb
            improved = step >= anneal_until and math.isfinite(score) and score < best["val_bpd"]
            if improved:
                best.update(val_bpd=score, step=step, test_bpd=tb)
                checkpoint(out / "best.pt", step)  # before last.pt: last.pt's "best" always exists
        if row:
            row["seconds"] = round(time.time() - t_start, 3)
            metrics.write(**row)
            msg = f"step {step}/{cfg.steps}  loss {row['train_loss']:.4f} nats/dim  train {row['train_bpd']:.3f} bits/dim  lr {lr:.2e}"
            if do_eval:
                msg += f"  | val {row['val_bpd']:.3f}  test {row['test_bpd']:.3f} bits/dim  (best val {best['val_bpd']:.3f} @ {best['step']})"
            if use_tqdm:
                bar.set_postfix_str(f"loss {row['train_loss']:.3f} bpd {row['train_bpd']:.3f}" + (f" test {row['test_bpd']:.3f}" if do_eval else ""))
                if do_eval:
                    bar.write(msg)
            elif do_eval or time.time() - last_print >= 5.0:
                rate = (step - start) / max(time.time() - t_loop, 1e-9)
                _say(msg + f"  {rate:.1f} it/s", quiet, info)
                last_print = time.time()
        if use_tqdm:
            bar.update(1)
        if step % cfg.checkpoint_every == 0 or do_eval:
            checkpoint(out / "last.pt", step)
            last_ckpt_step = step
        if timed_out and step < cfg.steps:
            stopped_early = True
            why = "interrupted (Ctrl-C)" if interrupt.requested else f"time limit of {cfg.max_time:g} s reached"
            _say(f"{why} at step {step}", quiet, info)
            break
    interrupt.restore()
    if bar is not None:
        bar.close()
    if step != last_ckpt_step:
        checkpoint(out / "last.pt", step)
    barrier(info)
    if interrupt.requested:
        _say(f"checkpoint of step {step} written to {out / 'last.pt'}; continue with --resume", quiet, info)
        raise KeyboardInterrupt

    # -- final report --------------------------------------------------------------------
    final_test = evaluate_bpd(model, test_x, dims, levels, cfg.test_batch, info)
    final_val = evaluate_bpd(model, val_x, dims, levels, cfg.test_batch, info) if val_x is not None else math.nan
    best_path = out / "best.pt"
    test_best = final_test
    weights_step = step  # no candidate for best.pt (e.g. the run ended while annealing): the last state
    if best_path.exists() and best["step"] >= 0:
        bck = read_checkpoint(best_path)
        restore(model, bck)
        test_best = evaluate_bpd(model, test_x, dims, levels, cfg.test_batch, info)
        weights_step = int(bck["step"])
    if info.main:
        save_safetensors(out / "weights.safetensors", model.state_dict(), spec_text=getattr(spec, "source", ""),
                         spec_sha256=_spec_sha(spec), step=weights_step, spec_name=str(getattr(spec, "name", "")))
    sparsity = None
    prior = getattr(model, "prior", None)
    if prior is not None and hasattr(prior, "sparsity_report"):
        with torch.no_grad():
            model.eval()
            z, _ = model(test_x[:1000])
            model.train()
        sparsity = prior.sparsity_report(z)
    summary = {
        "spec": str(getattr(spec, "name", "")),
        "spec_sha256": _spec_sha(spec),
        "data": cfg.data,
        "step": step,
        "steps": cfg.steps,
        "stopped_early": stopped_early,
        "skipped_updates": skipped,
        "best_step": int(best["step"]),
        "weights_step": weights_step,
        "anneal_until": anneal_until,
        "best_val_bpd": float(best["val_bpd"]),
        "test_bpd": float(test_best),
        "final_val_bpd": float(final_val),
        "final_test_bpd": float(final_test),
        "seconds": round(time.time() - t_start, 2),
        "parameters": n_params,
        "world": info.world,
        "invertible_memory": cfg.invertible_memory,
        "out": str(out),
        "sparsity": sparsity,
        "uniform_bpd": math.log2(levels) if levels else None,
    }
    if info.main:
        try:
            plot_curves(out / "metrics.csv", out / "curves.png", title=f"{summary['spec']} on {cfg.data}",
                        reference={"uniform": math.log2(levels)} if levels else None)
        except Exception as e:  # a plot must never lose a finished run
            _say(f"warning: could not plot curves: {e}", quiet, info)
    if cfg.sample_n > 0:
        from flowdsl.runtime.training.sampling import draw_samples, write_samples

        xs = draw_samples(model, cfg.sample_n, cfg.sample_temperature, cfg.seed, info)
        if info.main:
            image = levels is not None and len(train_ds.shape) == 3
            write_samples(xs, out / "samples.png", levels, image, data=None if image else train_ds.x[:5000],
                          title=f"{summary['spec']} T={cfg.sample_temperature:g}")
    if info.main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    _say(
        f"done: {step} steps in {summary['seconds']:.1f} s; best validation {best['val_bpd']:.4f} bits/dim at step {best['step']}; "
        f"test {test_best:.4f} bits/dim (best weights), {final_test:.4f} (last weights); run folder {out}",
        quiet,
        info,
    )
    if sparsity is not None:
        _say(
            f"latent sparsity: {100 * sparsity['fraction_in_spike']:.1f}% of test latents within the spike "
            f"(|z| < {sparsity['threshold']:.4g}; spike width {sparsity['spike_width']:.4g}, step {sparsity['step']})",
            quiet,
            info,
        )
    return summary


def load_model(ckpt_or_run: str | os.PathLike, spec: Any = None, factory: Optional[ModelFactory] = None, prefer: str = "best") -> tuple[Any, nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint (or run folder) with its weights, in eval mode.

    The spec is parsed from the text stored in the checkpoint (``spec`` only checks that it
    matches). Returns ``(spec, model, checkpoint)``.

    Raises:
        CheckpointError: unreadable, corrupt or mismatched checkpoint.
    """
    factory = factory or ModelFactory()
    path = resolve_checkpoint_path(ckpt_or_run, prefer=prefer)
    ckpt = read_checkpoint(path)
    if spec is not None:
        check_spec(ckpt, as_spec(spec, factory), str(path))
    try:
        stored = factory.parse(ckpt["spec_text"], filename=ckpt.get("spec_filename") or "<checkpoint>")
    except FlowDSLError as e:
        raise CheckpointError(f"the spec stored in the checkpoint no longer compiles: {e.message}", filename=str(path)) from None
    seed = int((ckpt.get("config") or {}).get("seed", 0))
    model = factory.build(stored, seed)
    restore(model, ckpt)
    model.eval()
    return stored, model, ckpt
