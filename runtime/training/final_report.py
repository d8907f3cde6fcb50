"""The end of a ``flowdsl train`` run: score the last and the best weights, write the results.

After the last update: the last weights are scored on the validation and the whole test split;
the best checkpoint (if any evaluation qualified) is restored into the model and scored on the
test split; its weights go to ``weights.safetensors`` (with the spec text); spike_slab priors
report the sparsity of the test latents; ``curves.png``, ``samples.png`` (``sample_n`` > 0) and
``summary.json`` are written. The summary dict is returned by ``train``. For a spec that declares
a ``context`` every score is the conditional bits/dim (of log p(x | c), each example with its
context), ``summary["context"]`` names the declaration (None otherwise), and ``samples.png`` has
one row per class (labels) or one row per context of the first test examples (vectors, images).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

from torch import nn

from flowdsl.runtime.data.context import declared_context
from flowdsl.runtime.training.checkpoint import read_checkpoint, restore, save_safetensors, spec_architecture
from flowdsl.runtime.training.config import TrainConfig
from flowdsl.runtime.training.distributed import DistInfo
from flowdsl.runtime.training.evaluation import latent_sparsity
from flowdsl.runtime.training.metrics import plot_curves
from flowdsl.runtime.training.models import spec_sha256
from flowdsl.runtime.training.progress import say
from flowdsl.runtime.training.run_data import RunData
from flowdsl.runtime.training.run_folder import write_summary
from flowdsl.runtime.training.sample_context import context_summary, default_contexts
from flowdsl.wording import plural

__all__ = ["final_report"]


def final_report(
    *,
    spec: Any,
    model: nn.Module,
    data: RunData,
    cfg: TrainConfig,
    info: DistInfo,
    out: Path,
    best: dict[str, Any],
    step: int,
    stopped_early: bool,
    skipped: int,
    anneal_until: int,
    n_params: int,
    t_start: float,
    quiet: bool,
    setting_changes: Optional[list] = None,
    evaluator: Any = None,
    last_eval: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Score, write the run's results and return its summary (see the module docstring).

    ``best`` is the loop's ``{"val_bpd", "step", "test_bpd"}`` of the best evaluation (step -1:
    none), ``step`` the updates done, ``t_start`` the run's ``time.time()`` at its start,
    ``evaluator`` the loop's :class:`~.budget.Evaluator` (its deadline bounds the scoring here
    too) and ``last_eval`` the loop's evaluation of the last weights (``{"step", "val_bpd",
    "val_n", "test_bpd", "test_n"}``), which is not repeated.
    """
    levels = data.levels
    if evaluator is None:
        from flowdsl.runtime.training.budget import Evaluator, TimeBudget

        evaluator = Evaluator(model, cfg, data, info, TimeBudget(t_start, cfg.max_time), quiet)
    last = last_eval if (last_eval or {}).get("step") == step else {}
    whole_test = len(data.test_eval_x) == len(data.test_x)
    # the last weights: the loop's final evaluation scored them already (all of the test split
    # unless --eval-max cut it)
    if last and whole_test and last["test_n"] == len(data.test_x):
        final_test = last["test_bpd"]
    else:
        final_test, _ = evaluator.score("test (last weights)", data.test_x, data.test_c)
    final_val = (
        last["val_bpd"] if last else evaluator.score("validation (last weights)", data.val_eval_x, data.val_eval_c)[0]
    )
    best_path = out / "best.pt"
    test_best = final_test
    weights_step = step  # no candidate for best.pt (e.g. the run ended while annealing): the last state
    if best_path.exists() and best["step"] >= 0:
        bck = read_checkpoint(best_path)
        weights_step = int(bck["step"])
        if weights_step != step:
            restore(model, bck)
        if weights_step == step:
            test_best = final_test
        elif whole_test and math.isfinite(best.get("test_bpd", math.nan)):
            test_best = best["test_bpd"]  # scored on the whole test split when it was chosen
        else:
            test_best, _ = evaluator.score("test (best weights)", data.test_x, data.test_c)
    if info.main:
        save_safetensors(
            out / "weights.safetensors",
            model.state_dict(),
            spec_text=getattr(spec, "source", ""),
            spec_sha256=spec_sha256(spec),
            arch_sha256=spec_architecture(spec),
            step=weights_step,
            spec_name=str(getattr(spec, "name", "")),
        )
    sparsity = latent_sparsity(model, data.test_x[:1000], None if data.test_c is None else data.test_c[:1000])
    summary = {
        "spec": str(getattr(spec, "name", "")),
        "spec_sha256": spec_sha256(spec),
        "data": cfg.data,
        "step": step,
        "steps": cfg.steps,
        "stopped_early": stopped_early,
        "skipped_updates": skipped,
        "best_step": int(best["step"]),
        "weights_step": weights_step,
        "anneal_until": anneal_until,
        "best_val_bpd": float(best["val_bpd"]) if best["step"] >= 0 else None,
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
        "setting_changes": list(setting_changes or []),
        "eval_max": cfg.eval_max,
        "partial_evaluations": list(evaluator.partial),
        # conditional specs: the bits/dim above are conditional, of log p(x | c)
        "context": context_summary(spec),
    }
    if info.main:
        try:
            plot_curves(
                out / "metrics.csv",
                out / "curves.png",
                title=f"{summary['spec']} on {cfg.data}",
                reference={"uniform": math.log2(levels)} if levels else None,
            )
        except Exception as e:  # a plot must never lose a finished run
            say(f"warning: could not plot curves: {e}", quiet, info)
    if cfg.sample_n > 0 and not evaluator.budget.affords(2 * cfg.sample_n):
        say("samples.png not written: the time limit (--max-time) is reached", quiet, info)
    elif cfg.sample_n > 0:
        from flowdsl.runtime.training.sampling import draw_samples, write_samples

        contexts = default_contexts(declared_context(spec), cfg.sample_n, data.test_c)
        ctx = None if contexts is None else contexts.per_sample
        n_draw = cfg.sample_n if ctx is None else len(ctx)
        xs = draw_samples(model, n_draw, cfg.sample_temperature, cfg.seed, info, context=ctx)
        if info.main:
            image = levels is not None and len(data.train.shape) == 3
            write_samples(
                xs,
                out / "samples.png",
                levels,
                image,
                data=None if image else data.train.x[:5000],
                title=f"{summary['spec']} T={cfg.sample_temperature:g}" + (contexts.title if contexts else ""),
                cols=contexts.cols if contexts else None,
            )
    summary["seconds"] = round(time.time() - t_start, 2)
    if info.main:
        write_summary(out, summary)
    cond = "conditional " if summary["context"] else ""
    chosen = (
        f"best validation {best['val_bpd']:.4f} {cond}bits/dim at step {best['step']}; "
        f"test {test_best:.4f} {cond}bits/dim (best weights), {final_test:.4f} (last weights)"
        if best["step"] >= 0
        else f"no best.pt (no evaluation qualified{'; the run ended while annealing' if anneal_until > step else ''}); "
        f"test {final_test:.4f} {cond}bits/dim (last weights, in weights.safetensors)"
    )
    say(f"done: {plural(step, 'step')} in {summary['seconds']:.1f} s; {chosen}; run folder {out}", quiet, info)
    for note in evaluator.partial:
        say(f"note: evaluation cut short by the time limit: {note}", quiet, info)
    if sparsity is not None:
        say(
            f"latent sparsity: {100 * sparsity['fraction_in_spike']:.1f}% of test latents within the spike "
            f"(|z| < {sparsity['threshold']:.4g}; spike width {sparsity['spike_width']:.4g}, step {sparsity['step']})",
            quiet,
            info,
        )
    return summary
