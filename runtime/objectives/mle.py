"""``objective mle`` at run time: training by maximum likelihood and sampling from the prior.

Both delegate to the training package: :func:`flowdsl.runtime.training.loop.train_mle` (the loop,
its checkpoints and reports) and :func:`flowdsl.runtime.training.sampling.sample_grid`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Optional

from flowdsl.runtime.objectives.registry import ObjectiveRuntime, objective_runtime

__all__ = ["MLERuntime"]


@objective_runtime("mle")
class MLERuntime(ObjectiveRuntime):
    summary = "maximum likelihood"

    def train(
        self,
        spec: Any,
        data: Optional[str] = None,
        steps: Optional[int] = None,
        out: Optional[str | os.PathLike] = None,
        resume: bool = False,
        *,
        overwrite: bool = False,
        quiet: bool = False,
        **options: Any,
    ) -> dict[str, Any]:
        """See :func:`flowdsl.runtime.training.loop.train_mle` (``options``: ``factory`` and the
        :class:`~flowdsl.runtime.training.config.TrainConfig` fields)."""
        from flowdsl.runtime.training.loop import train_mle

        return train_mle(spec, data, steps, out, resume, overwrite=overwrite, quiet=quiet, **options)

    def sample(
        self,
        run: str | os.PathLike,
        n: int = 64,
        *,
        out: str | os.PathLike = "grid.png",
        seed: int = 0,
        data: Optional[str] = None,
        temperature: float = 0.7,
        factory: Any = None,
        device: str = "auto",
        context: Optional[str] = None,
        context_file: Optional[str] = None,
    ) -> dict[str, Any]:
        """``n`` samples at ``temperature`` as an image grid (vectors: a scatter over the data);
        see :func:`flowdsl.runtime.training.sampling.sample_grid` (``context``, ``context_file``: the
        contexts of a conditional run)."""
        from flowdsl.runtime.training.sampling import sample_grid
        from flowdsl.wording import plural

        res = sample_grid(
            run,
            n=n,
            temperature=temperature,
            out_png=out,
            seed=seed,
            data=data,
            factory=factory,
            device=device,
            context=context,
            context_file=context_file,
        )
        res["message"] = (
            f"wrote {plural(res['n'], 'sample')} of {res['spec']} (step {res['step']}, temperature "
            f"{res['temperature']:g}) to {res['path']}"
        )
        if res.get("contexts"):
            res["message"] += f"; contexts: {res['contexts']}"
        if res.get("nonfinite"):
            res["message"] += (
                f"\nwarning: {res['nonfinite']} of {res['n']} samples hold NaN or Inf (drawn as 0 in pictures, "
                "kept in .npy/.npz)"
            )
        return res

    def add_train_arguments(self, group: Any) -> None:
        group.add_argument(
            "--invertible-memory",
            dest="invertible_memory",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="recompute activations from outputs in the backward pass: far less memory, ~1.4x the "
            "time per step (one process only; a resumed run keeps the setting unless told "
            "--no-invertible-memory)",
        )

    def add_sample_arguments(self, group: Any) -> None:
        from flowdsl.cliargs import float_range

        group.add_argument(
            "--temperature",
            "-t",
            type=float_range(0),
            default=0.7,
            metavar="T",
            help="prior temperature, finite and >= 0: z is drawn with its spread scaled by T (default 0.7)",
        )
        group.add_argument(
            "--context",
            default=None,
            metavar="VALUE",
            help="conditional runs: the context of every sample: a class 0..K-1 (context label) or D "
            "comma-separated numbers (context vector); default: one row per class (labels) or the contexts "
            "of the first test examples",
        )
        group.add_argument(
            "--context-file",
            dest="context_file",
            default=None,
            metavar="FILE",
            help="conditional runs: N contexts in an .npy (or an .npz 'context' array); one row of samples each",
        )
