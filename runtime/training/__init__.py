"""Training, checkpoints and sampling: ``flowdsl train`` and ``flowdsl sample``.

    summary = train(spec, data="digits", steps=2000, out="runs/glow")   # dict of metrics
    spec, model, ckpt = load_model("runs/glow")                          # best weights
    sample_grid("runs/glow", n=64, temperature=0.7, out_png="grid.png")

:func:`train` dispatches on the spec's objective through the objective registry
(:func:`flowdsl.runtime.objectives.train`): ``objective mle`` runs this package's loop
(:func:`flowdsl.runtime.training.loop.train_mle`), other objectives their own runtime.

CLI glue: :func:`flowdsl.runtime.training.cli.register` adds the ``train`` and ``sample``
subcommands to an ``argparse`` subparsers object.
"""

from __future__ import annotations

from flowdsl.runtime.objectives.registry import train
from flowdsl.runtime.training.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from flowdsl.runtime.training.config import TrainConfig, resolve_config
from flowdsl.runtime.training.models import ModelFactory, load_model
from flowdsl.runtime.training.sampling import draw_samples, sample_grid

__all__ = [
    "train",
    "TrainConfig",
    "resolve_config",
    "ModelFactory",
    "load_model",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "sample_grid",
    "draw_samples",
]
