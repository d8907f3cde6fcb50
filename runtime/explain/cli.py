"""``flowdsl explain``: pictures and numbers that explain an RG-Flow model.

    flowdsl explain SPEC_OR_CKPT --receptive-fields -o rf.png     one RF map per level
    flowdsl explain SPEC_OR_CKPT --mix -o mix.png                 scale and temperature mixing
    flowdsl explain SPEC_OR_CKPT --inpaint -o inpaint.png         O(log L) inpainting vs all latents
    flowdsl explain --inpaint-benchmark -o benchmarks/rg.md       ms/step, cone-only vs full image, vs L

SPEC_OR_CKPT is a ``.flow`` file (optionally with ``--checkpoint``) or a checkpoint written by
``flowdsl train``. An untrained spec is the identity up to constant scales, so its receptive
fields would be single pixels: without a checkpoint the weights are randomised
(``--perturb``, default 0.1) unless ``--fit N`` first trains N quick MLE steps on the spec's data.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from flowdsl.cliargs import nonnegative_int, positive_int
from flowdsl.errors import FlowDSLError
from flowdsl.wording import plural

__all__ = ["register", "main", "load_model_for_explain", "run_explain"]


# ------------------------------------------------------------------------------------------
def load_model_for_explain(source: str, checkpoint: str | None = None):
    """(model, trained) from a spec file (+ optional checkpoint), a checkpoint or a run folder."""
    import flowdsl

    path = Path(source)
    if path.suffix == ".flow" or (
        path.is_file() and path.read_bytes()[:4096].lstrip().startswith((b"flow", b"block", b"#"))
    ):
        model = flowdsl.compile(flowdsl.load(path))
        if checkpoint:
            from flowdsl.runtime.training.checkpoint_io import load_weights

            load_weights(model, checkpoint)
        return model, bool(checkpoint)
    if not path.exists():
        raise FlowDSLError("no such spec file, checkpoint or run folder", filename=str(source))
    from flowdsl.runtime.training.models import load_model

    _spec, model, _ckpt = load_model(path)  # the checkpoint keeps its own spec text
    return model, True


def _images(model, n: int, data: str | None, seed: int) -> tuple[torch.Tensor, str]:
    """n images in model space: the spec's test data (bin centres) or model samples."""
    from flowdsl.runtime.explain.latents import dtype_device, sample_latents

    spec = getattr(model, "spec", None)
    dtype, _ = dtype_device(model)
    try:
        from flowdsl.runtime.data import load_for_spec
        from flowdsl.runtime.data.dequantize import dequantize

        ds = load_for_spec(spec, data=data, split="test", seed=seed)
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(ds), generator=g)[:n]
        x = dequantize(ds.x[idx], ds.levels, mode="none").to(dtype)
        return x, f"{n} test images of '{ds.name}'"
    except Exception as e:  # noqa: BLE001 - any data problem: fall back to samples, say so
        with torch.no_grad():
            x = model.inverse(sample_latents(model, n, 0.7, seed))
        return x.clamp(0, 1), f"{n} model samples at T=0.7 (no data: {str(e).splitlines()[0][:80]})"


# ------------------------------------------------------------------------------------------
def _cmd_receptive_fields(model, args) -> None:
    from flowdsl.runtime.explain.plots import plot_receptive_fields
    from flowdsl.runtime.explain.receptive import receptive_fields

    rf = receptive_fields(model, n_samples=args.samples, temperature=args.temperature, seed=args.seed)
    out = plot_receptive_fields(rf, args.output or "rf.png")
    ext, sup = rf.extent(), rf.support()
    print(f"receptive fields E|dx/dz_l| over {args.samples} prior samples at T={args.temperature:g}:")
    print(f"  {'level':>5} {'latent (y,x)':>13} {'90% mass side':>14} {'support (px)':>13} {'cone (px)':>10}")
    for h, (p, e, s) in enumerate(zip(rf.positions, ext, sup)):
        cone = int(rf.cones[h].sum()) if rf.cones is not None else -1
        print(f"  {h:>5} {str(p):>13} {e:>14} {s:>13} {cone:>10}")
    print(f"wrote {out}")


def _cmd_mix(model, args) -> None:
    from flowdsl.runtime.explain.latents import latent_levels, scale_mix, temperature_mix
    from flowdsl.runtime.explain.plots import plot_mix_grid

    H = int(latent_levels(model).max()) + 1
    x, what = _images(model, 2 * args.pairs, args.data, args.seed)
    rows, names = [], []
    for i in range(args.pairs):
        xa, xb = x[2 * i : 2 * i + 1], x[2 * i + 1 : 2 * i + 2]
        rows.append([scale_mix(model, xa, xb, lam)[0].clamp(0, 1) for lam in range(H + 1)])
        names.append(f"scale: pair {i}")
    for i in range(args.pairs):
        rows.append(
            [
                temperature_mix(model, 1, lam, args.t_high, args.t_low, seed=args.seed + i)[0].clamp(0, 1)
                for lam in range(H + 1)
            ]
        )
        names.append(f"temp.: seed {args.seed + i}")
    cols = [f"λ={lam}" for lam in range(H + 1)]
    title = (
        f"scale mixing (top {plural(args.pairs, 'row')}, {what}): levels ≥ λ from A, finer from B (λ=0: A, λ={H}: B)\n"
        f"temperature mixing (bottom {plural(args.pairs, 'row')}): levels ≥ λ at T={args.t_high:g}, "
        f"finer at T={args.t_low:g}"
    )
    out = plot_mix_grid(rows, cols, args.output or "mix.png", row_titles=names, title=title)
    print(
        f"scale mixing of {plural(args.pairs, 'pair')} and temperature mixing of {plural(args.pairs, 'draw')}, "
        f"λ = 0…{H}"
    )
    print(f"wrote {out}")


def _cmd_inpaint(model, args) -> None:
    from flowdsl.runtime.explain.inpaint import hole_visibility, inpaint
    from flowdsl.runtime.explain.latents import latent_levels
    from flowdsl.runtime.explain.plots import plot_inpainting

    levels = latent_levels(model)
    C, Hh, W = levels.shape
    hole = args.hole or max(1, W // 4)
    mask = torch.zeros(Hh, W, dtype=torch.bool)
    c0, c1 = Hh // 2 - hole // 2, W // 2 - hole // 2
    mask[c0 : c0 + hole, c1 : c1 + hole] = True
    xs, what = _images(model, args.candidates, args.data, args.seed)
    vis = hole_visibility(xs, mask)
    pick = int(torch.argmax(vis))  # an image whose hole shows: not a flat patch
    x = xs[pick : pick + 1]
    results = {}
    for region in ("cone", "all"):
        results[region] = inpaint(
            model, x[0], mask, steps=args.steps, region=region, method=args.method, seed=args.seed, context=args.context
        )
    out = plot_inpainting(x[0], mask, results, levels, args.output or "inpaint.png")
    lv = levels
    cone = results["cone"].free
    per_level = [int((cone & (lv == h)).sum()) for h in range(int(lv.max()) + 1)]
    print(
        f"inpainting a {hole}×{hole} hole in image {pick} of {what} (the most visible hole: RMS "
        f"{float(vis[pick]):.3f} from the fill, median {float(vis.median()):.3f}), {args.steps} {args.method} steps:"
    )
    for name, r in results.items():
        err = float(((r.x - x)[0][:, mask] ** 2).mean().sqrt())
        how = "cone generator" if r.incremental else "whole generator"
        print(
            f"  {name:>4}: {r.n_free:>6} free latents, {r.ms_per_step:7.2f} ms/step ({how}, {r.patches_per_step} "
            f"patches/step), hole RMSE {err:.4f}"
        )
    print(f"  touched latents per level (fine→coarse): {per_level}")
    print(f"wrote {out}")


def _cmd_benchmark(args) -> None:
    from flowdsl.runtime.bench.rg import inpaint_benchmark

    sizes = list(args.sizes)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread gives stable timings
    try:
        table, rows = inpaint_benchmark(
            sizes,
            hole=args.hole or 4,
            kernel=args.kernel,
            hidden=args.hidden,
            depth=args.depth,
            steps=args.steps,
            fit_steps=args.fit,
            data=args.data or "patches",
            seed=args.seed,
            repeats=args.repeats,
            verbose=True,
        )
    finally:
        torch.set_num_threads(threads)
    cmd = (
        "flowdsl explain --inpaint-benchmark "
        + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("--inpaint-benchmark") + 1 :])
        if "--inpaint-benchmark" in sys.argv
        else "flowdsl explain --inpaint-benchmark"
    )
    text = _benchmark_markdown(table, rows, cmd.strip(), args)
    print(table)
    if args.output:
        from flowdsl.outputs import atomic_write_text

        p = Path(args.output)
        atomic_write_text(p, text, what="benchmark report")
        print(f"wrote {p}")


def _linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y ≈ a + b·x: (a, b, largest |residual| / y)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0.0
    a = my - b * mx
    return a, b, max(abs(y - (a + b * x)) / y for x, y in zip(xs, ys))


def _benchmark_markdown(table: str, rows: list[dict], cmd: str, args) -> str:
    import platform

    hole = args.hole or 4
    K = args.kernel
    if args.fit:
        model_text = (
            f"trained for {args.fit} Adam steps (batch 32, lr 2e-3, maximum likelihood) on 1×L×L crops of "
            f"'{args.data or 'patches'}' (the photos bundled with scikit-image); the ground truth is a held-out crop"
        )
    else:
        model_text = (
            "given generic random weights (N(0, 0.05²) added to every parameter); the ground truth is a model "
            "sample at T=0.7 (the timings do not depend on the weights)"
        )
    rmse_note = (
        ""
        if args.fit
        else (
            " With random weights the model is no image model, so neither completion beats the mean\n"
            "  fill by much: these columns show only that the two variants complete the hole alike."
        )
    )
    summary = ""
    if len(rows) >= 2:
        touched = [float(r["cone"]["n_free"]) for r in rows]
        a, b, res = _linear_fit(touched, [r["cone"]["ms_per_step"] for r in rows])
        r0, r1 = rows[0], rows[-1]
        summary = (
            f"\nIn this run: ms/step of the cone ≈ {a:.2f} + {b:.4f} × touched latents, largest deviation "
            f"{100 * res:.0f}% (touched latents {int(touched[0])} → {int(touched[-1])}, "
            f"×{touched[-1] / touched[0]:.2f}; "
            f"cone ms/step ×{r1['cone']['ms_per_step'] / r0['cone']['ms_per_step']:.2f}; "
            f"full-image ms/step ×{r1['all']['ms_per_step'] / r0['all']['ms_per_step']:.2f}). "
            f"Full / cone at L={r1['L']}: {r1['ratio']:.2f}.\n"
        )
    return f"""# RG-Flow inpainting: time per step, cone-only vs full image

Produced by

    {cmd}

({time.strftime("%Y-%m-%d")}, torch {torch.__version__}, {platform.machine()}, 1 thread, on a 2-core machine
**shared with up to 7 other jobs**: absolute times are inflated and noisy; the two columns of a row
were measured alternately, the order swapped every repeat, so both saw the same load.)

Set-up: for each L an RG-Flow with kernel K={K} (levels = log2(L/K)+1; {args.depth}× (actnorm + one
checkerboard affine coupling with an MLP subnet, hidden {args.hidden}) per disentangler and decimator;
Laplace prior) is compiled with `flowdsl.compile` and {model_text}. A fixed {hole}×{hole} hole at
the centre is erased (filled with the mean of the known pixels) and encoded, and `inpaint` runs
{args.steps} Adam steps (lr 0.05) of MAP inference, {args.repeats} times per variant; the table keeps the
fastest (CPU time of the process / steps):

* **cone**: only the touched latents z_T (those whose causal cone meets the hole) are free, and
  every step runs the incremental generator (`flowdsl.runtime.explain.cone.ConeGenerator`): at
  each RG layer only the patches in the causal cone of the hole dilated by K pixels are gathered,
  run through the patch bijector in one batched call and scattered into a compact buffer; the
  other latents stay at their encoded values and are read from that cache. Energy:
  Σ_(known pixels in the cone's window) (G(z) − x)² / (2·0.02²) − Σ_T log p(z_i).
* **full**: full-image inpainting: every latent is free and every step runs the whole generator.
  Energy: Σ_(all known pixels) (G(z) − x)² / (2·0.02²) − log p(z).

{table}{summary}
Reading the table:

* **touched latents** grow by a constant number per doubling of L (one more RG level with the
  same count per level), i.e. O(log L), while **latents** grow as L².
* **patches recomputed per step (cone)** (patch-bijector evaluations per generator call, summed
  over the layers) grow the same way, by a constant per extra level, while the whole generator
  evaluates Σ_h 2·(L/(K·2^h))² = O(L²) patches. **window pixels**: the pixels the cone generator
  produces (the hole, at least K known pixels around it, rounded out to whole patches); it stops
  growing once the image is larger than the cone's footprint.
* **ms/step cone** grows like the touched latents (see the fit above): every extra level adds one
  disentangler and one decimator call on a bounded number of patches. At these sizes a call costs
  mostly fixed per-operator overhead, which is the same for 3 patches and for 3000, so the cone's
  time is about a constant per level and the full-image time is that overhead plus arithmetic
  that grows as L²; the ratio therefore starts near 1 at L = 8 (where the cone is the whole image)
  and grows with L.
* **max abs diff**: the cone generator against the whole generator on the window pixels at the
  cone's optimum (float32; the float64 test `tests/runtime/explain/test_cone.py` checks ≤ 1e-12
  on random holes, sizes, level counts and weights).
* **hole RMSE** compares each completion with the ground truth; **RMSE cone vs full (hole)**
  compares the two completions; **hole RMSE mean-fill** is the trivial baseline. The cone's data
  term sees only the known pixels of its window, the full one every known pixel; the completion
  of the hole depends only on z_T in both.{rmse_note}
"""


# ------------------------------------------------------------------------------------------
def run_explain(args: argparse.Namespace) -> int:
    if args.output:  # refused before any work: a folder, device or FIFO, or a missing folder
        from flowdsl.outputs import check_output_path

        check_output_path(args.output, what="picture" if not args.inpaint_benchmark else "benchmark report")
    if args.inpaint_benchmark:
        _cmd_benchmark(args)
        return 0
    if not args.source:
        raise FlowDSLError("explain needs a spec file or a checkpoint (or --inpaint-benchmark)")
    modes = [m for m in ("receptive_fields", "mix", "inpaint") if getattr(args, m)]
    if len(modes) != 1:
        raise FlowDSLError("give exactly one of --receptive-fields, --mix, --inpaint")
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, trained = load_model_for_explain(args.source, args.checkpoint)
        from flowdsl.runtime.bench.rg import quick_fit
        from flowdsl.runtime.explain.latents import find_rg, randomise_parameters

        if not find_rg(model):
            raise FlowDSLError("the model has no rg layer; explain works on RG-Flow models", filename=args.source)
        if getattr(model, "context_info", None) is not None:
            raise FlowDSLError(
                f"this model declares `{model.context_info.declared}`, and `flowdsl explain` takes no context "
                "on the command line yet; use the Python API (flowdsl.runtime.explain: receptive_fields, "
                "inpaint, scale_mix, temperature_mix take model_context=...)",
                filename=args.source,
            )
        if args.fit:
            print(f"quick fit: {args.fit} MLE steps on the spec's data")
            quick_fit(model, args.fit, args.data, args.seed, log=print)
            trained = True
        perturb = args.perturb if args.perturb is not None else (0.0 if trained else 0.1)
        if perturb > 0:
            print(
                f"note: untrained weights randomised with std {perturb:g} (give a checkpoint, --fit N, or --perturb 0)"
            )
            randomise_parameters(model, perturb, args.seed)
        model.eval()
        {"receptive_fields": _cmd_receptive_fields, "mix": _cmd_mix, "inpaint": _cmd_inpaint}[modes[0]](model, args)
    finally:
        torch.set_num_threads(threads)
    return 0


def register(subparsers) -> None:
    """Add ``flowdsl explain`` to the CLI's subparsers."""
    from flowdsl.cliargs import (
        int_list,
        nonnegative_float,
        positive_float,
        sample_count,
        seed,
        steps,
        thread_count,
    )
    from flowdsl.compiler.limits import LIMITS

    e = subparsers.add_parser(
        "explain",
        help="RG-Flow explanations: receptive fields, scale/temperature mixing, inpainting",
        description=__doc__.split("\n\n")[0],
    )
    e.add_argument("source", nargs="?", help="a .flow spec file or a checkpoint")
    e.add_argument("--checkpoint", default=None, help="weights for the spec file")
    e.add_argument("--receptive-fields", action="store_true", help="draw E|dx/dz_l| for one latent per level")
    e.add_argument("--mix", action="store_true", help="scale mixing (levels ≥ λ from A) and temperature mixing")
    e.add_argument("--inpaint", action="store_true", help="complete a hole by optimising only the touched latents")
    e.add_argument(
        "--inpaint-benchmark", action="store_true", help="touched latents and time vs L, as a markdown table"
    )
    e.add_argument("-o", "--output", default=None, help="output file (.png; .md for --inpaint-benchmark)")
    e.add_argument("--samples", type=sample_count, default=32, help="prior samples for the receptive-field expectation")
    e.add_argument(
        "--candidates", type=positive_int(4096), default=16, help="inpaint: images to pick the most visible hole from"
    )
    e.add_argument("--hidden", type=positive_int(4096), default=32, help="benchmark: hidden width of the patch MLPs")
    e.add_argument("--depth", type=positive_int(16), default=1, help="benchmark: actnorm+coupling pairs per patch body")
    e.add_argument(
        "--context", type=nonnegative_int(), default=None, help="inpaint: known ring (px) around the hole (default K)"
    )
    e.add_argument(
        "--temperature", type=positive_float(), default=1.0, help="prior temperature of the pictures (default 1)"
    )
    e.add_argument("--pairs", type=positive_int(1024), default=3, help="image pairs / draws in the mixing grid")
    e.add_argument(
        "--t-high", type=positive_float(), default=0.8, help="temperature mixing: the high temperature (default 0.8)"
    )
    e.add_argument(
        "--t-low", type=positive_float(), default=0.2, help="temperature mixing: the low temperature (default 0.2)"
    )
    e.add_argument(
        "--hole",
        type=positive_int(LIMITS.max_dim),
        default=None,
        help="hole side in pixels (default L/4; benchmark: 4)",
    )
    e.add_argument("--steps", type=steps, default=100, help="inpainting optimisation steps")
    e.add_argument(
        "--method", choices=["map", "langevin"], default="map", help="inpainting: MAP ascent or Langevin sampling"
    )
    e.add_argument(
        "--sizes",
        type=int_list(positive_int(LIMITS.max_dim)),
        default=[8, 16, 32, 64],
        help="benchmark image sizes, comma-separated (default 8,16,32,64)",
    )
    e.add_argument("--kernel", type=positive_int(LIMITS.max_dim), default=4, help="benchmark patch edge K")
    e.add_argument(
        "--repeats",
        type=positive_int(1000),
        default=3,
        help="benchmark: time each inpainting this many times, keep the fastest",
    )
    e.add_argument(
        "--data", default=None, help="data for mixing/inpainting/--fit (default: the spec's train(data=...))"
    )
    e.add_argument("--fit", type=steps, default=0, help="first train this many quick MLE steps")
    e.add_argument(
        "--perturb",
        type=nonnegative_float(),
        default=None,
        help="randomise weights with this std (default 0.1 when untrained)",
    )
    e.add_argument("--threads", type=thread_count, default=1, help="torch threads (default 1: the machines are shared)")
    e.add_argument("--seed", type=seed, default=0, help="random seed (samples, perturbation, fitting)")
    e.set_defaults(func=run_explain)


def main(argv=None) -> int:
    """``python -m flowdsl.runtime.explain.cli ...`` (same arguments as ``flowdsl explain``)."""
    from flowdsl.cliargs import FlowArgumentParser

    p = FlowArgumentParser(prog="flowdsl explain")
    sub = p.add_subparsers(dest="command")
    register(sub)
    args = p.parse_args(["explain", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run_explain(args)
    except FlowDSLError as e:
        print(e.render(), file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
