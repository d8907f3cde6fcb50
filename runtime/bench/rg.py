"""Small RG-Flow models for pictures and benchmarks, and the inpainting benchmark.

    quick_fit(model, steps)            a few MLE steps on the spec's data (for pictures and benchmarks)
    rg_spec_text(L)                    a small RG-Flow spec for an L×L image
    inpaint_benchmark()                ms/step of cone vs full-image inpainting vs L, fixed hole (markdown)

``flowdsl explain --inpaint-benchmark`` and ``flowdsl bench`` (section ``rg``) run the benchmark;
``benchmarks/rg.md`` explains its columns.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch
from torch import nn

from flowdsl.runtime.explain.inpaint import inpaint
from flowdsl.runtime.explain.latents import dtype_device, latent_levels, randomise_parameters, sample_latents

__all__ = ["quick_fit", "rg_spec_text", "inpaint_benchmark"]


def quick_fit(
    model: nn.Module, steps: int, data: str | None = None, seed: int = 0, batch: int | None = None, log=None
) -> list[float]:
    """A few Adam steps of maximum likelihood on the spec's data; returns bits/dim per step.

    For pictures of an otherwise untrained spec and for the benchmark; ``flowdsl train`` is the
    real training command. Uses the spec's ``train(batch, lr)`` and ``dequantize`` settings.
    """
    from flowdsl.runtime.data import load_for_spec
    from flowdsl.runtime.data.dequantize import bits_per_dim, dequantize

    spec = model.spec
    ds = load_for_spec(spec, data=data, split="train", seed=seed)
    batch = batch or int(getattr(spec.train, "batch", 64) or 64)
    lr = float(getattr(spec.train, "lr", 1e-3) or 1e-3)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    dims = math.prod(model.input_shape)
    dtype, _ = dtype_device(model)
    history = []
    model.train()
    for step in range(steps):
        idx = torch.randint(len(ds), (batch,), generator=g)
        x = dequantize(ds.x[idx], ds.levels, mode=spec.dequantize, generator=g).to(dtype)
        lp = model.log_prob(x)
        loss = -lp.mean() / dims
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 50.0)
        opt.step()
        history.append(float(bits_per_dim(lp.detach(), dims, ds.levels).mean()))
        if log is not None and (step == 0 or (step + 1) % max(1, steps // 5) == 0):
            log(f"  fit step {step + 1}/{steps}: {history[-1]:.3f} bits/dim")
    model.eval()
    return history


def rg_spec_text(
    L: int, kernel: int = 4, channels: int = 1, hidden: int = 32, depth: int = 1, data: str = "patches"
) -> str:
    """A small RG-Flow spec for an L×L image (used by the benchmark and the tests)."""
    body = " ".join(["actnorm coupling(kind=affine, net=mlp, mask=checkerboard, hidden=%d)" % hidden] * depth)
    return (
        f"flow rg_L{L} {{\n"
        f"  input image(channels={channels}, height={L}, width={L}, levels=256)\n"
        f"  rg(kernel={kernel}) {{\n"
        f"    disentangler {{ {body} }}\n"
        f"    decimator {{ {body} }}\n"
        f"  }}\n"
        f"  prior laplace(scale=0.7071)\n"
        f"  train(data={data}, batch=32, lr=2e-3, seed=0)\n"
        f"}}\n"
    )


def inpaint_benchmark(
    sizes: Sequence[int] = (8, 16, 32, 64),
    hole: int = 4,
    kernel: int = 4,
    channels: int = 1,
    hidden: int = 32,
    steps: int = 50,
    fit_steps: int = 0,
    data: str = "patches",
    seed: int = 0,
    repeats: int = 1,
    verbose: bool = False,
    depth: int = 1,
) -> tuple[str, list[dict]]:
    """Time per inpainting step vs L for a fixed hole: cone (incremental) against full-image.

    For each L an RG-Flow is compiled from :func:`rg_spec_text` (``hidden``, ``depth``). With
    ``fit_steps`` > 0 it is trained for that many MLE steps on ``data`` and the ground truth is a
    held-out crop; otherwise its weights are randomised and the ground truth is a model sample at
    T = 0.7. A hole×hole square at the centre is erased, then :func:`inpaint` (MAP, ``steps`` Adam
    steps) runs over the touched latents with the cone generator (only the hole's causal cone is
    regenerated per step) and over all latents with the whole generator (full-image inpainting).
    The two are timed alternately ``repeats`` times (CPU time of the process, the order swapped
    every repeat, so both see the same machine load) and the fastest run of each is kept.
    Returns (markdown table, rows).
    """
    import flowdsl
    from flowdsl.runtime.explain.cone import ConeGenerator

    rows = []
    for L in sizes:
        spec = rg_spec_text(L, kernel, channels, hidden, depth=depth, data=data)
        model = flowdsl.compile(flowdsl.parse(spec), seed=seed)
        row: dict = {"L": L, "latents": channels * L * L}
        if fit_steps > 0:
            t0 = time.perf_counter()
            hist = quick_fit(model, fit_steps, seed=seed)
            row["fit_bpd"] = sum(hist[-20:]) / len(hist[-20:])
            row["fit_seconds"] = time.perf_counter() - t0
            from flowdsl.runtime.data import load_for_spec
            from flowdsl.runtime.data.dequantize import dequantize

            test = load_for_spec(model.spec, split="test", seed=seed, n=8)
            truth = dequantize(test.x[seed % len(test) : seed % len(test) + 1], test.levels, mode="none")
        else:
            model = randomise_parameters(model, std=0.05, seed=seed).eval()
            with torch.no_grad():
                truth = model.inverse(sample_latents(model, 1, 0.7, seed))
        mask = torch.zeros(L, L, dtype=torch.bool)
        c = L // 2 - hole // 2
        mask[c : c + hole, c : c + hole] = True
        levels = latent_levels(model)[0]
        row["levels"] = int(levels.max()) + 1
        fill = truth[0][:, ~mask].mean()
        row["mean_fill_rmse"] = float(((truth[0][:, mask] - fill) ** 2).mean().sqrt())
        runs: dict[str, list] = {"cone": [], "all": []}
        for r in range(max(1, repeats)):
            for region in ("cone", "all") if r % 2 == 0 else ("all", "cone"):
                runs[region].append(inpaint(model, truth, mask, steps=steps, lr=0.05, region=region, seed=seed))
        for region in ("cone", "all"):
            res = min(runs[region], key=lambda r: r.cpu_seconds)
            row[region] = {
                "n_free": res.n_free,
                "seconds": res.cpu_seconds,
                "wall": res.seconds,
                "ms_per_step": res.ms_per_step,
                "patches": res.patches_per_step,
                "incremental": res.incremental,
                "hole_rmse": float(((res.x - truth)[0][:, mask] ** 2).mean().sqrt()),
                "known_rmse": float(((res.raw - truth)[0][:, ~mask] ** 2).mean().sqrt()),
                "x": res.x,
                "z": res.z,
            }
            if region == "cone":
                row["per_level"] = [int((res.free[0] & (levels == h)).sum()) * channels for h in range(row["levels"])]
        gen = ConeGenerator(model, mask)
        row["window"] = int(gen.pixels.numel())
        with torch.no_grad():  # the incremental generator against the whole one at the cone's optimum
            z = row["cone"]["z"]
            row["max_diff"] = float((gen.generate(gen.gather(z), z) - gen.window(model.inverse(z))).abs().max())
        row["ratio"] = row["all"]["ms_per_step"] / row["cone"]["ms_per_step"]
        row["cone_vs_all"] = float(((row["cone"]["x"] - row["all"]["x"])[0][:, mask] ** 2).mean().sqrt())
        for region in ("cone", "all"):
            del row[region]["x"], row[region]["z"]
        rows.append(row)
        if verbose:
            fit = f", fit {row['fit_seconds']:.0f} s to {row['fit_bpd']:.2f} bits/dim" if fit_steps > 0 else ""
            print(
                f"L={L}: touched {row['cone']['n_free']} / {row['latents']}, patches {row['cone']['patches']} / "
                f"{row['all']['patches']}: {row['cone']['ms_per_step']:.2f} ms/step vs "
                f"{row['all']['ms_per_step']:.2f} ms/step (×{row['ratio']:.2f}){fit}",
                flush=True,
            )
    fit_cols = fit_steps > 0
    head = (
        "| L | levels | latents | touched latents (cone) | per level (fine→coarse) "
        "| patches recomputed per step (cone) | patches per step (full) | window pixels "
        "| ms/step cone | ms/step full | ratio full / cone "
        "| ms/step cone per 100 touched | max abs diff cone vs full generator (window) "
        "| hole RMSE cone | hole RMSE full | RMSE cone vs full (hole) | hole RMSE mean-fill |"
        + (" model bits/dim |" if fit_cols else "")
        + "\n|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        + ("---:|" if fit_cols else "")
        + "\n"
    )
    lines = []
    for r in rows:
        cone, al = r["cone"], r["all"]
        lines.append(
            f"| {r['L']} | {r['levels']} | {r['latents']} | {cone['n_free']} | {', '.join(map(str, r['per_level']))} "
            f"| {cone['patches']} | {al['patches']} | {r['window']} | {cone['ms_per_step']:.2f} "
            f"| {al['ms_per_step']:.2f} | {r['ratio']:.2f} | {100 * cone['ms_per_step'] / cone['n_free']:.2f} "
            f"| {r['max_diff']:.1e} | {cone['hole_rmse']:.3f} | {al['hole_rmse']:.3f} | {r['cone_vs_all']:.3f} "
            f"| {r['mean_fill_rmse']:.3f} |" + (f" {r['fit_bpd']:.2f} |" if fit_cols else "")
        )
    return head + "\n".join(lines) + "\n", rows
