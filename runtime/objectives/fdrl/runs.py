"""Using an FDRL model: sampling particles, reloading a run from its checkpoint, sample pictures.

    sample_fdrl(model, n)              K + κ flow steps from the source with the EMA estimator
    load_fdrl(run)                     (spec, model, checkpoint) of a run folder or checkpoint
    write_fdrl_samples(model, x, path) an image grid, or a scatter over the data for vectors
    classifier_guidance(model, clf, …) class-conditional guidance from a saved classifier

``flowdsl sample`` (:mod:`flowdsl.runtime.objectives.fdrl.objective`), ``flowdsl fdrl-eval``
(:mod:`flowdsl.runtime.objectives.fdrl.cli`) and the training loop's evaluation use these.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from torch import Tensor

from flowdsl.errors import CheckpointError, FlowDSLError
from flowdsl.runtime.objectives.fdrl.datasets import load_data
from flowdsl.runtime.objectives.fdrl.model import FDRLModel, is_fdrl_spec, resolve_settings
from flowdsl.runtime.objectives.fdrl.sampler import Guidance, run_flow
from flowdsl.runtime.objectives.fdrl.sources import gen

__all__ = ["sample_fdrl", "load_fdrl", "write_fdrl_samples", "classifier_guidance"]


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
    x = run_flow(
        est, x0, k, generator=g, guidance=guidance, clamp=model.scale.clamp, batch=batch, **model.sampler_kwargs()
    )
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
        raise CheckpointError(
            f"the spec stored in the checkpoint no longer compiles: {e.message}", filename=str(path)
        ) from None
    if not is_fdrl_spec(spec):
        raise CheckpointError(
            f"checkpoint of spec {spec.name!r} with objective {spec.objective.name!r}, not fdrl", filename=str(path)
        )
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


def write_fdrl_samples(
    model: FDRLModel, x: Tensor, path: str | os.PathLike, data: Optional[Tensor] = None, title: str = ""
) -> None:
    """Samples (model scale) as an image grid (images) or a scatter over data (vectors)."""
    from flowdsl.runtime.training.sampling import write_samples

    if model.scale.image:
        write_samples(model.scale.to_unit(x), path, model.scale.levels, True)
    else:
        write_samples(model.scale.to_data(x), path, None, False, data=data, title=title)


def classifier_guidance(
    model: FDRLModel, classifier_path: str, label: str, n: int, weight: float
) -> tuple[Guidance, Any]:
    """Guidance towards class ``label`` (a number, or ``"all"``: particle i gets class i mod
    classes) by the classifier saved at ``classifier_path``; returns ``(guidance, labels)``."""
    import torch

    from flowdsl.runtime.objectives.fdrl.classifier import load_classifier

    clf, _ = load_classifier(classifier_path)
    if tuple(clf.input_shape) != tuple(model.input_shape):
        raise FlowDSLError(
            f"classifier input {clf.input_shape} does not match the run's input {model.input_shape}",
            filename=classifier_path,
        )
    if str(label).lower() == "all":
        labels = torch.arange(n) % clf.classes
    else:
        try:
            y = int(label)
        except ValueError:
            raise FlowDSLError(f"--label must be a class number or 'all', got {label!r}", filename="sample") from None
        if not 0 <= y < clf.classes:
            raise FlowDSLError(
                f"--label {y} is not a class of the classifier (0..{clf.classes - 1})", filename="sample"
            )
        labels = torch.full((n,), y, dtype=torch.long)
    return Guidance(clf, labels, weight), labels
