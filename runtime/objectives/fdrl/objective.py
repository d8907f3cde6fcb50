"""``objective fdrl`` at run time: what ``flowdsl train`` and ``flowdsl sample`` do for FDRL specs.

Training delegates to :func:`flowdsl.runtime.objectives.fdrl.train.train_fdrl`, sampling to the
particle sampler (:func:`flowdsl.runtime.objectives.fdrl.runs.sample_fdrl`). The objective adds
an "objective fdrl" group of flags to both commands, and the ``fdrl-classifier``, ``fdrl-eval``
and ``fdrl-export`` commands (:mod:`flowdsl.runtime.objectives.fdrl.cli`):

    flowdsl train specs/fdrl_moons.flow --out runs/fdrl_moons
    flowdsl train specs/fdrl_glow_digits.flow --source-checkpoint runs/glow_digits --out runs/fdrl_glow
    flowdsl train specs/fdrl_digits.flow --data-classes 7 --source-data digits --source-classes 1 \\
        --out runs/one2seven
    flowdsl sample runs/fdrl_digits --n 100 --classifier runs/clf_guide.safetensors --label all --guidance 0.3 \\
        -o cond.png
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from flowdsl.errors import FlowDSLError
from flowdsl.runtime.objectives.registry import ObjectiveRuntime, objective_runtime
from flowdsl.wording import plural

__all__ = ["FDRLRuntime"]


@objective_runtime("fdrl")
class FDRLRuntime(ObjectiveRuntime):
    summary = "a density-ratio estimator and its particle sampler"

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
        """:func:`~flowdsl.runtime.objectives.fdrl.train.train_fdrl`; ``options`` holds
        :class:`~flowdsl.runtime.training.config.TrainConfig` fields and
        :class:`~flowdsl.runtime.objectives.fdrl.model.FDRLSettings` fields (also as a dict ``fdrl``);
        ``factory`` is not used (FDRL builds its estimator, not the spec's flow)."""
        from flowdsl.runtime.objectives.fdrl.model import FDRLSettings
        from flowdsl.runtime.objectives.fdrl.train import train_fdrl

        options.pop("factory", None)
        names = {f.name for f in dataclasses.fields(FDRLSettings)}
        fdrl = dict(options.pop("fdrl", None) or {})
        fdrl.update({k: options.pop(k) for k in list(options) if k in names})
        return train_fdrl(
            spec, data=data, steps=steps, out=out, resume=resume, overwrite=overwrite, quiet=quiet, fdrl=fdrl, **options
        )

    def sample(
        self,
        run: str | os.PathLike,
        n: int = 64,
        *,
        out: str | os.PathLike = "grid.png",
        seed: int = 0,
        data: Optional[str] = None,
        flow_steps: Optional[int] = None,
        classifier: Optional[str] = None,
        label: str = "all",
        guidance: float = 0.3,
        raw: bool = False,
        show_source: Optional[str] = None,
        source_temperature: Optional[float] = None,
        factory: Any = None,
        device: str = "auto",
    ) -> dict[str, Any]:
        """``n`` particles of the run's sampler (K + κ steps, or ``flow_steps``, from its source with
        the EMA estimator unless ``raw``), optionally guided by ``classifier`` towards ``label``
        with weight ``guidance``; written as an image grid or a scatter over the data (``data``:
        its name, or ``"none"``). ``show_source`` also writes the particles' start. FDRL samples on
        the CPU (``device``: auto or cpu)."""
        from flowdsl.outputs import check_output_format, check_output_path
        from flowdsl.runtime.objectives.fdrl.train import _cpu_only

        _cpu_only(device, None, str(run))
        from flowdsl.runtime.objectives.fdrl.datasets import load_data
        from flowdsl.runtime.objectives.fdrl.runs import classifier_guidance, load_fdrl, sample_fdrl, write_fdrl_samples
        from flowdsl.runtime.training.sampling import SAMPLE_FORMATS

        if n < 1:
            raise FlowDSLError(f"--n must be at least 1, got {n}", filename="sample")
        for path in (out, show_source) if show_source else (out,):  # refused before sampling, not after
            check_output_format(path, SAMPLE_FORMATS, what="samples")
            check_output_path(path, what="samples")
        spec, model, ckpt = load_fdrl(run)
        if source_temperature is not None:
            if model.source_kind != "prior":
                raise FlowDSLError("--source-temperature applies to runs with source=prior", filename="sample")
            model.source.temperature = float(source_temperature)
        guide = None
        if classifier:
            guide, _ = classifier_guidance(model, classifier, label, n, guidance)
        x, x0 = sample_fdrl(model, n, seed=seed, steps=flow_steps, use_ema=not raw, guidance=guide, return_start=True)
        config = ckpt.get("config") or {}
        data_x = None
        if not model.scale.image and data != "none":
            name = data or config.get("data") or spec.train.data
            if name:
                classes = (config.get("fdrl") or {}).get("data_classes")
                data_x = load_data(spec, name, "test", int(config.get("seed", 0)), classes).x
        k = flow_steps if flow_steps is not None else model.args.steps + model.kappa
        on = config.get("data") or spec.train.data
        write_fdrl_samples(model, x, out, data=data_x, title=f"{spec.name} on {on}: {k} FDRL steps")
        if show_source:
            write_fdrl_samples(model, x0, show_source, data=data_x, title=f"{spec.name}: source {model.source_kind}")
        what = f", guided by {classifier} (label {label}, phi {guidance:g})" if guide is not None else ""
        message = (
            f"wrote {plural(n, 'FDRL sample')} of {spec.name} (step {ckpt['step']}, {plural(k, 'sampler step')} from "
            f"{model.source_kind}{what}) to {out}"
        )
        return {
            "path": str(out),
            "n": int(n),
            "step": int(ckpt["step"]),
            "spec": spec.name,
            "sampler_steps": int(k),
            "message": message,
        }

    def add_train_arguments(self, group: Any) -> None:
        from flowdsl.cliargs import float_range, int_range, limited_int, positive_float
        from flowdsl.runtime.objectives.fdrl.cli import KAPPA_MAX

        g = group
        g.add_argument(
            "--source-checkpoint",
            default=None,
            metavar="RUN|CKPT",
            help="source=prior: the trained flow of this spec's layers",
        )
        g.add_argument(
            "--source-temperature",
            type=positive_float(),
            default=None,
            help="source=prior: sampling temperature of the flow (default 1)",
        )
        g.add_argument("--source-data", default=None, help="use a second data set as the source (unpaired translation)")
        g.add_argument(
            "--source-classes", default=None, metavar="C,C", help="keep only these labels of the source data"
        )
        g.add_argument(
            "--data-classes", default=None, metavar="C,C", help="keep only these labels of the training data"
        )
        g.add_argument(
            "--ema",
            type=float_range(0.0, 1.0, open_max=True),
            default=None,
            help="EMA decay of the estimator weights (default 0.998)",
        )
        g.add_argument(
            "--kappa",
            type=int_range(0, KAPPA_MAX),
            default=None,
            help="extra sampler steps after K at evaluation/sampling (default: images 20, 10 for uniform; vectors 0)",
        )
        g.add_argument(
            "--eval-n",
            type=limited_int("max_samples", minimum=2),
            default=None,
            help="particles per evaluation (default 1000)",
        )

    def add_sample_arguments(self, group: Any) -> None:
        from flowdsl.cliargs import int_range, nonnegative_float, positive_float
        from flowdsl.runtime.objectives.fdrl.cli import FLOW_STEPS_MAX

        g = group
        g.add_argument(
            "--flow-steps",
            type=int_range(1, FLOW_STEPS_MAX),
            default=None,
            help="sampler steps (default K + kappa of the run)",
        )
        g.add_argument("--classifier", default=None, help="classifier for guidance (flowdsl fdrl-classifier)")
        g.add_argument(
            "--label",
            default="all",
            help="class to generate with --classifier, or 'all' (sample i gets class i mod classes)",
        )
        g.add_argument(
            "--guidance",
            type=nonnegative_float(),
            default=0.3,
            help="guidance weight phi (energy f'(r) - phi log p(y|x); default 0.3)",
        )
        g.add_argument("--raw", action="store_true", help="sample with the raw estimator weights instead of their EMA")
        g.add_argument(
            "--show-source", default=None, metavar="PNG", help="also write the source samples (the particles' start)"
        )
        g.add_argument(
            "--source-temperature",
            type=positive_float(),
            default=None,
            help="source=prior runs: the flow's sampling temperature (default: the run's)",
        )

    def train_options(self, given: dict[str, Any]) -> dict[str, Any]:
        from flowdsl.runtime.objectives.fdrl.cli import parse_classes

        out = dict(given)
        for k in ("source_classes", "data_classes"):
            if k in out:
                out[k] = parse_classes(out[k])
        return out

    def add_commands(self, subparsers: Any) -> None:
        from flowdsl.runtime.objectives.fdrl.cli import register

        register(subparsers)
