"""Small RG-Flow models for pictures and benchmarks, and the inpainting benchmark.

    quick_fit(model, steps)            a few MLE steps on the spec's data (for pictures and benchmarks)
    rg_spec_text(L)                    a small RG-Flow spec for an L×L image
    inpaint_benchmark()                touched latents and time vs L for a fixed hole (markdown)

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
) -> tuple[str, list[dict]]:
    """How the touched latents and the time grow with L for a fixed hole; cone vs all latents.

    For each L an RG-Flow is compiled from :func:`rg_spec_text`. With ``fit_steps`` > 0 it is
    trained for that many MLE steps on ``data`` (natural-image crops by default) and the ground
    truth is a held-out crop; otherwise its weights are randomised and the ground truth is a
    model sample at T = 0.7. A hole×hole square at the centre is erased, then :func:`inpaint`
    (MAP, ``steps`` Adam steps) runs once over the touched latents and once over all latents.
    The optimisation is deterministic; with ``repeats`` > 1 it is timed that many times and the
    fastest run is reported (the machines are shared). Returns (markdown table, rows).
    """
    import flowdsl

    rows = []
    for L in sizes:
        model = flowdsl.compile(flowdsl.parse(rg_spec_text(L, kernel, channels, hidden, data=data)), seed=seed)
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
        for region in ("cone", "all"):
            runs = [
                inpaint(model, truth, mask, steps=steps, lr=0.05, region=region, seed=seed)
                for _ in range(max(1, repeats))
            ]
            res = min(runs, key=lambda r: r.cpu_seconds)
            hole_err = float(((res.x - truth)[0][:, mask] ** 2).mean().sqrt())
            known_err = float(((res.raw - truth)[0][:, ~mask] ** 2).mean().sqrt())
            row[region] = {
                "n_free": res.n_free,
                "seconds": res.cpu_seconds,
                "wall": res.seconds,
                "hole_rmse": hole_err,
                "known_rmse": known_err,
                "x": res.x,
            }
            if region == "cone":
                row["per_level"] = [int((res.free[0] & (levels == h)).sum()) * channels for h in range(row["levels"])]
        row["cone_vs_all"] = float(((row["cone"]["x"] - row["all"]["x"])[0][:, mask] ** 2).mean().sqrt())
        for region in ("cone", "all"):
            del row[region]["x"]
        rows.append(row)
        if verbose:
            fit = f", fit {row['fit_seconds']:.0f} s to {row['fit_bpd']:.2f} bits/dim" if fit_steps > 0 else ""
            print(
                f"L={L}: touched {row['cone']['n_free']} / {row['latents']} "
                f"({row['cone']['seconds']:.2f} s vs {row['all']['seconds']:.2f} s{fit})",
                flush=True,
            )
    fit_cols = fit_steps > 0
    head = (
        f"| L | levels | latents | touched (cone) | per level (fine→coarse) | touched / log2 L | "
        f"CPU time cone (s, {steps} steps) | CPU time all (s, {steps} steps) "
        "| hole RMSE cone | hole RMSE all | RMSE cone vs all (hole) | hole RMSE mean-fill | "
        "known-pixel RMSE cone | known-pixel RMSE all |"
        + (" model bits/dim |" if fit_cols else "")
        + "\n|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        + ("---:|" if fit_cols else "")
        + "\n"
    )
    lines = []
    for r in rows:
        cone, al = r["cone"], r["all"]
        lines.append(
            f"| {r['L']} | {r['levels']} | {r['latents']} | {cone['n_free']} | {', '.join(map(str, r['per_level']))} "
            f"| {cone['n_free'] / math.log2(r['L']):.1f} | {cone['seconds']:.2f} | {al['seconds']:.2f} "
            f"| {cone['hole_rmse']:.3f} | {al['hole_rmse']:.3f} | {r['cone_vs_all']:.3f} | {r['mean_fill_rmse']:.3f} "
            f"| {cone['known_rmse']:.4f} | {al['known_rmse']:.4f} |" + (f" {r['fit_bpd']:.2f} |" if fit_cols else "")
        )
    return head + "\n".join(lines) + "\n", rows
