"""FDRL's own commands (added by the objective's runtime, :mod:`flowdsl.runtime.objectives.fdrl.objective`,
which also handles ``flowdsl train`` / ``flowdsl sample`` for ``objective fdrl``):

    flowdsl fdrl-classifier --out clf.safetensors [--adversarial EPS] [--seed S]
    flowdsl fdrl-eval RUN [--n N] [--classifier CLF] [--guidance-classifier G --guidance PHI]
    flowdsl fdrl-export RUN --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Optional

from flowdsl.errors import FlowDSLError
from flowdsl.wording import plural

__all__ = ["register", "cmd_classifier", "cmd_eval", "cmd_export", "parse_classes"]


#: most sampler steps: K (the language's fdrl(steps=...), at most 100,000) plus kappa (as many)
FLOW_STEPS_MAX = 200_000
#: most extra sampler steps after K
KAPPA_MAX = 100_000


def parse_classes(text: Optional[str]) -> Optional[list[int]]:
    """``"1,7"`` → [1, 7]; None/empty → None."""
    if text is None or str(text).strip() == "":
        return None
    try:
        return [int(t) for t in str(text).split(",") if t.strip() != ""]
    except ValueError:
        raise FlowDSLError(f"classes must be comma-separated integers, got {text!r}", filename="fdrl") from None


# -- own commands ------------------------------------------------------------------------------


def cmd_classifier(args: argparse.Namespace) -> int:
    import torch

    from flowdsl.runtime.objectives.fdrl.classifier import save_classifier, train_classifier

    torch.set_num_threads(max(1, args.threads))
    shape = tuple(int(t) for t in args.shape.split(","))
    model, report = train_classifier(
        args.data,
        shape,
        args.levels,
        steps=args.steps,
        seed=args.seed,
        noise=args.noise,
        adversarial=args.adversarial,
        quiet=args.quiet,
    )
    save_classifier(model, args.out, report)
    extra = (
        f", robust accuracy {100 * report['robust_test_accuracy']:.1f}% (L2 PGD, eps {args.adversarial:g})"
        if "robust_test_accuracy" in report
        else ""
    )
    print(
        f"wrote {args.out}: test accuracy {100 * report['test_accuracy']:.2f}% "
        f"on {report['n_test']} {args.data} test images"
        f" (train {100 * report['train_accuracy']:.2f}%){extra}"
    )
    return 0


def _fmt_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from flowdsl.runtime.objectives.fdrl.datasets import load_data
    from flowdsl.runtime.objectives.fdrl.evaluate import energy_distance, evaluate_images
    from flowdsl.runtime.objectives.fdrl.runs import classifier_guidance, load_fdrl, sample_fdrl

    spec, model, ckpt = load_fdrl(args.run, prefer=args.prefer)
    if args.source_temperature is not None:
        if model.source_kind != "prior":
            raise FlowDSLError("--source-temperature applies to runs with source=prior", filename="fdrl-eval")
        model.source.temperature = float(args.source_temperature)
    config = ckpt.get("config") or {}
    settings = model.settings
    seed = int(config.get("seed", 0))
    data_name = config.get("data") or spec.train.data
    n = args.n
    x, x0 = sample_fdrl(model, n, seed=args.seed, steps=args.flow_steps, return_start=True, batch=args.batch)
    k = args.flow_steps if args.flow_steps is not None else model.args.steps + model.kappa
    result: dict[str, Any] = {
        "run": args.run,
        "spec": spec.name,
        "step": int(ckpt["step"]),
        "n": n,
        "sampler_steps": k,
        "source": model.source_kind,
    }
    print(
        f"{spec.name} (step {ckpt['step']}): {plural(n, 'particle')}, {plural(k, 'sampler step')} from "
        f"{model.source.describe()}, "
        f"seed {args.seed}"
    )
    if not model.scale.image:
        test = load_data(spec, data_name, "test", seed, settings.data_classes)
        ref = test.x.to(torch.float64)
        e_src = energy_distance(model.scale.to_data(x0), ref)
        e_fd = energy_distance(model.scale.to_data(x), ref)
        result.update(
            reference=f"{data_name} test split ({len(test)} points)",
            energy_source=e_src,
            energy_fdrl=e_fd,
            improvement=e_src / e_fd if e_fd > 0 else math.inf,
        )
        print(
            f"energy distance to the {len(test)} held-out {data_name} test points: source {e_src:.5f}, FDRL {e_fd:.5f} "
            f"({result['improvement']:.1f}× closer)"
        )
    else:
        if not args.classifier:
            raise FlowDSLError(
                "image runs are evaluated in a classifier's feature space: give --classifier CLF "
                "(make one with flowdsl fdrl-classifier)",
                filename="fdrl-eval",
            )
        from flowdsl.runtime.objectives.fdrl.classifier import load_classifier

        clf, rep = load_classifier(args.classifier)
        train = load_data(spec, data_name, "train", seed, settings.data_classes)
        test = load_data(spec, data_name, "test", seed, settings.data_classes)
        ref = model.scale.from_raw(train.x)
        sets = {"test split (data)": model.scale.from_raw(test.x), f"source ({model.source_kind})": x0, "FDRL": x}
        labels: dict[str, torch.Tensor] = {}
        if args.guidance_classifier:
            guidance, y = classifier_guidance(model, args.guidance_classifier, "all", n, args.guidance)
            xc, x0c = sample_fdrl(
                model,
                n,
                seed=args.seed,
                steps=args.flow_steps,
                guidance=guidance,
                x0=x0,
                return_start=True,
                batch=args.batch,
            )
            name = f"FDRL + guidance (phi {args.guidance:g})"
            sets[name] = xc
            labels[name] = y
            labels[f"source ({model.source_kind})"] = y  # chance level: the same requested labels on unguided particles
            labels["FDRL"] = y
        res = evaluate_images(sets, ref, clf, labels=labels, quantize=model.scale.quantize, small=len(test))
        target = settings.data_classes
        if target:
            for name, xs in sets.items():
                with torch.no_grad():
                    pred = clf(model.scale.quantize(xs)).argmax(-1)
                res[name]["in_target_classes"] = float(torch.isin(pred, torch.tensor(target)).float().mean())
        result.update(
            reference=f"{data_name} train split ({len(train)} images)",
            classifier=args.classifier,
            classifier_test_accuracy=rep.get("test_accuracy"),
            sets=res,
        )
        rows = []
        for name, r in res.items():
            rows.append(
                (
                    name,
                    str(int(r["n"])),
                    f"{r['frechet']:.2f}",
                    f"{r['frechet_small']:.2f}" if "frechet_small" in r else "-",
                    f"{r['energy']:.4f}",
                    f"{100 * r['accuracy']:.1f}%" if "accuracy" in r else "-",
                    f"{100 * r['in_target_classes']:.1f}%" if "in_target_classes" in r else "-",
                )
            )
        print(
            f"reference: the {len(train)} images of the {data_name} train split"
            f"{' (classes ' + ','.join(map(str, target)) + ')' if target else ''}; "
            f"features and accuracy from {args.classifier} "
            f"(test accuracy {100 * rep.get('test_accuracy', float('nan')):.1f}%)"
        )
        print(
            _fmt_table(
                rows,
                (
                    "samples",
                    "n",
                    "Fréchet",
                    f"Fréchet (n={len(test)})",
                    "energy",
                    "acc. (requested class)",
                    "in target classes",
                ),
            )
        )
    if args.json:
        from flowdsl.outputs import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=2, default=float) + "\n", what="JSON result")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from flowdsl.runtime.objectives.fdrl.export import check_estimator_parity, export_estimator
    from flowdsl.runtime.objectives.fdrl.runs import load_fdrl

    spec, model, ckpt = load_fdrl(args.run)
    path = export_estimator(model, args.out, use_ema=not args.raw)
    res = check_estimator_parity(model, path, batch=args.batch, use_ema=not args.raw)
    print(f"wrote {path} ({model.estimator.head} of the {'raw' if args.raw else 'EMA'} estimator, step {ckpt['step']})")
    print(
        f"onnxruntime vs PyTorch (float32, batch {args.batch}): max abs err {res['abs']:.3e}, "
        f"max rel err {res['rel']:.3e}"
    )
    print("the sampler is a PyTorch-only loop (it needs grad_x of the estimator); `flowdsl sample` runs it")
    if res["rel"] > args.tolerance:
        print(f"error: onnxruntime differs from PyTorch by {res['rel']:.3e} (> {args.tolerance:g})", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    """Add the ``fdrl-*`` commands to an ``argparse`` subparsers object."""
    from flowdsl.cliargs import (
        batch_size,
        batch_size_or_zero,
        int_range,
        nonnegative_float,
        positive_float,
        sample_count,
        seed,
        steps,
        thread_count,
    )
    from flowdsl.compiler.limits import LIMITS

    flow_steps = int_range(1, FLOW_STEPS_MAX)
    c = subparsers.add_parser(
        "fdrl-classifier",
        help="train the small image classifier used for FDRL guidance and evaluation",
        description="Train a small CNN classifier on a labelled image data set (default: the 8x8 digits).",
    )
    c.add_argument("--out", "-o", required=True, help="output .safetensors file")
    c.add_argument("--data", default="digits", help="labelled image data set (default digits)")
    c.add_argument("--shape", default="1,8,8", help="C,H,W of the images (default 1,8,8)")
    c.add_argument(
        "--levels", type=int_range(2, LIMITS.max_int), default=17, help="quantisation levels of the data (default 17)"
    )
    c.add_argument("--steps", type=steps, default=1500, help="training steps (default 1500)")
    c.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    c.add_argument(
        "--noise",
        type=nonnegative_float(),
        default=0.1,
        help="Gaussian noise augmentation (model scale) on half of each batch",
    )
    c.add_argument(
        "--adversarial",
        type=nonnegative_float(),
        default=0.0,
        metavar="EPS",
        help="L2 PGD adversarial training radius (0: none)",
    )
    c.add_argument("--threads", type=thread_count, default=1, help="intra-op threads (default 1)")
    c.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    c.set_defaults(func=cmd_classifier)

    e = subparsers.add_parser(
        "fdrl-eval",
        help="evaluate an FDRL run offline (energy / Fréchet distance, class accuracy)",
        description="Sample an FDRL run and compare its samples and its source's with held-out data.",
    )
    e.add_argument("run", metavar="RUN|CKPT", help="FDRL run folder or checkpoint")
    e.add_argument("--n", "-n", type=sample_count, default=2000, help="particles (default 2000)")
    e.add_argument("--seed", type=seed, default=0, help="sampling seed (default 0)")
    e.add_argument("--flow-steps", type=flow_steps, default=None, help="sampler steps (default K + kappa)")
    e.add_argument(
        "--batch",
        type=batch_size_or_zero,
        default=0,
        help="particles per sampler chunk (0: all at once)",
    )
    e.add_argument(
        "--prefer", choices=["best", "last"], default="best", help="checkpoint of a run folder (default best)"
    )
    e.add_argument(
        "--classifier", default=None, help="images: classifier whose features give the Fréchet distance and accuracy"
    )
    e.add_argument(
        "--guidance-classifier", default=None, help="images: also sample class-conditionally with this classifier"
    )
    e.add_argument("--guidance", type=nonnegative_float(), default=0.3, help="guidance weight phi (default 0.3)")
    e.add_argument(
        "--source-temperature",
        type=positive_float(),
        default=None,
        help="source=prior runs: sample the flow at this temperature",
    )
    e.add_argument("--json", default=None, help="write the results as JSON")
    e.set_defaults(func=cmd_eval)

    x = subparsers.add_parser(
        "fdrl-export",
        help="export an FDRL run's density-ratio estimator to ONNX and check it",
        description="Write estimator.onnx (x -> log r or r) and compare onnxruntime with PyTorch.",
    )
    x.add_argument("run", metavar="RUN|CKPT", help="FDRL run folder or checkpoint")
    x.add_argument("--out", required=True, help="output folder for estimator.onnx")
    x.add_argument("--raw", action="store_true", help="export the raw weights instead of their EMA")
    x.add_argument("--batch", type=batch_size, default=7, help="batch size of the parity check (default 7)")
    x.add_argument(
        "--tolerance", type=positive_float(), default=1e-4, help="largest relative error accepted (default 1e-4)"
    )
    x.set_defaults(func=cmd_export)
