"""The spike-and-slab claims, measured: one architecture trained with ``gaussian``, ``laplace`` and
``spike_slab`` priors, compared on sparsity, likelihood, a linear probe and denoising.

Li & Han (arXiv 2209.09949) claim that a gradually sparsified spike-and-slab prior gives sparse
latent codes that keep most of the information and help classification and denoising. For each
prior this module trains the same flow (:data:`DIGITS_SPEC`, the Glow of ``specs/glow_digits.flow``
with a fixed prior) for the same steps and reports, on the test split:

* **share in spike**: the fraction of test latents with |z| < z*, z* the crossing point of the
  spike-and-slab prior's weighted components at the end of its annealing
  (:meth:`~flowdsl.runtime.priors.spike_slab.SpikeSlabPrior.threshold`); the same z* for every
  prior, so the shares compare.
* **bits/dim** of the validation-selected weights (the training run's test figure).
* **linear probe**: test accuracy of a multinomial logistic regression (scikit-learn, standardised
  inputs) fitted on the train latents; the same probe on raw pixels is the reference.
* **denoising**: test images c (pixel/16 ∈ [0, 1]) with Gaussian noise σ, clipped to [0, 1]; the
  flow denoiser maps the noisy image to z, shrinks every latent with its prior's **posterior
  mean** E[z₀ | z] under z = z₀ + n, n ~ N(0, s²) (:func:`shrink`: Wiener for the Gaussian, the
  closed form for the Laplace, the responsibility-weighted Wiener gains of the two components for
  the spike-and-slab: the spike pulls small latents to 0), then inverts. The latent noise level s
  is chosen per prior and σ on 200 noised train images (a grid including s = 0, the identity) and
  applied to the test images. PSNR = 10·log10(1 / MSE) over all test pixels, against the clean
  images, for the noisy input, the flow denoiser and a 3×3 per-pixel median filter
  (``scipy.ndimage.median_filter``, reflected edges).

Images enter the flow at the centres of their bins, x = (16·c + ½)/17, and leave it through the
inverse map, clipped to [0, 1]. Everything is seeded; MNIST is compared too when its IDX files
are found (``runtime/data/README.md``).

    flowdsl bench-training --only sparsity --sparsity-steps 3000
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "PRIORS",
    "DIGITS_SPEC",
    "MNIST_SPEC",
    "SIGMAS",
    "SHRINK_GRID",
    "spike_slab_args",
    "shrink",
    "spike_share",
    "probe_accuracy",
    "psnr",
    "median_denoise",
    "flow_denoise",
    "evaluate_model",
    "sparsity_table",
]

SIGMAS = (0.1, 0.2, 0.3)
#: candidate latent noise levels s of the flow denoiser (0: no shrinkage)
SHRINK_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
#: the priors compared; ``{anneal}`` is filled with half the training steps
PRIORS = {
    "gaussian": "gaussian",
    "laplace": "laplace(scale=0.7071)",
    "spike_slab": "spike_slab(spike=0.05, slab=1.0, weight=0.3, anneal={anneal})",
}

DIGITS_SPEC = """
# The Glow of specs/glow_digits.flow with a fixed prior (benchmark: sparsity).
block step(hidden=64) {{
    actnorm
    conv1x1(param=lu)
    coupling(kind=affine, hidden=$hidden, net=conv, depth=2)
}}
flow sparsity_digits_{name} {{
    input image(channels=1, height=8, width=8, levels=17)
    dequantize uniform
    squeeze(factor=2)
    repeat 4 {{ step(hidden=64) }}
    split
    squeeze(factor=2)
    repeat 4 {{ step(hidden=64) }}
    prior {prior}
    objective mle
    train(data=digits, batch=64, lr=1e-3, steps={steps}, seed=0, weight_decay=1e-4, eval_every={eval_every})
}}
"""

MNIST_SPEC = """
# A small multi-scale Glow for MNIST with a fixed prior (benchmark: sparsity).
block step(hidden=64) {{
    actnorm
    conv1x1(param=lu)
    coupling(kind=affine, hidden=$hidden, net=conv, depth=2)
}}
flow sparsity_mnist_{name} {{
    input image(channels=1, height=32, width=32, levels=256)
    squeeze repeat 4 {{ step }} split
    squeeze repeat 4 {{ step }} split
    squeeze repeat 4 {{ step }}
    prior {prior}
    train(data=mnist, batch=64, lr=1e-3, steps={steps}, seed=0, weight_decay=1e-5,
          eval_every={eval_every}, test_batch=500)
}}
"""


def spike_slab_args(prior_text: str) -> dict[str, float]:
    """The keyword arguments of a ``spike_slab(...)`` prior text (numbers only)."""
    inner = prior_text.split("(", 1)[1].rsplit(")", 1)[0]
    return {k.strip(): float(v) for k, v in (kv.split("=") for kv in inner.split(","))}


# -- shrinkage ---------------------------------------------------------------------------------
def _gauss_shrink(z: Tensor, loc: Tensor, var: Tensor, s2: float) -> Tensor:
    return loc + (z - loc) * (var / (var + s2))


def _laplace_shrink(z: Tensor, loc: Tensor, b: Tensor, s2: float) -> Tensor:
    """E[θ | y] for θ ~ Laplace(0, b), y = θ + N(0, s²) (y = z − loc), in log space.

    The posterior is a two-piece truncated normal: on θ > 0, N(y − a, s²) with a = s²/b and weight
    e^(−y/b)·Φ((y − a)/s); on θ < 0, N(y + a, s²) with weight e^(y/b)·Φ(−(y + a)/s).
    """
    s = math.sqrt(s2)
    y = z - loc
    a = s2 / b
    al_p = (y - a) / s
    al_m = -(y + a) / s
    lw_p = -y / b + torch.special.log_ndtr(al_p)
    lw_m = y / b + torch.special.log_ndtr(al_m)
    log_phi = -0.5 * math.log(2 * math.pi)
    mill_p = torch.exp(log_phi - 0.5 * al_p * al_p - torch.special.log_ndtr(al_p))  # φ/Φ
    mill_m = torch.exp(log_phi - 0.5 * al_m * al_m - torch.special.log_ndtr(al_m))
    mean_p = (y - a) + s * mill_p
    mean_m = (y + a) - s * mill_m
    w_p = torch.sigmoid(lw_p - lw_m)
    return loc + w_p * mean_p + (1 - w_p) * mean_m


def _mixture_shrink(z: Tensor, weights: list[float], sds: list[Tensor], s2: float) -> Tensor:
    """E[θ | y] for a zero-mean Gaussian scale mixture Σ π_k N(0, σ_k²) and y = θ + N(0, s²)."""
    logs, gains = [], []
    for w, sd in zip(weights, sds):
        v = sd * sd + s2
        logs.append(math.log(w) - 0.5 * torch.log(v) - 0.5 * z * z / v)
        gains.append(sd * sd / v)
    r = torch.softmax(torch.stack(logs), dim=0)
    return z * sum(r[k] * gains[k] for k in range(len(gains)))


def shrink(prior: torch.nn.Module, z: Tensor, s: float) -> Tensor:
    """The posterior mean of the clean latent under ``prior`` if z carried N(0, s²) noise per entry
    (s = 0: z itself). Gaussian, Laplace and spike-and-slab priors (the module docstring)."""
    from flowdsl.runtime.priors.gaussian import GaussianPrior
    from flowdsl.runtime.priors.laplace import LaplacePrior
    from flowdsl.runtime.priors.spike_slab import SpikeSlabPrior

    if s <= 0:
        return z
    s2 = float(s) ** 2
    if isinstance(prior, GaussianPrior):
        return _gauss_shrink(z, prior.loc.to(z.dtype), torch.exp(2 * prior.log_scale.to(z.dtype)), s2)
    if isinstance(prior, LaplacePrior):
        return _laplace_shrink(z, prior.loc.to(z.dtype), torch.exp(prior.log_b.to(z.dtype)), s2)
    if isinstance(prior, SpikeSlabPrior):
        spike = prior.spike_width(z.dtype).to(z.device)
        slab = torch.full_like(spike, prior.slab)
        return _mixture_shrink(z, [1 - prior.weight, prior.weight], [spike, slab], s2)
    raise TypeError(f"no shrinkage rule for {type(prior).__name__}")


# -- measurements ------------------------------------------------------------------------------
def spike_share(z: Tensor, threshold: float) -> float:
    """Fraction of the entries of ``z`` with |z| < ``threshold``."""
    return float((z.abs() < threshold).to(torch.float64).mean())


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Test accuracy of a standardised multinomial logistic regression fitted on the train rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    clf.fit(train_x.reshape(len(train_x), -1), train_y)
    return float(clf.score(test_x.reshape(len(test_x), -1), test_y))


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    """10·log10(1 / MSE) in dB for images on [0, 1] (MSE over every pixel of the set)."""
    mse = float(np.mean((np.asarray(estimate, np.float64) - np.asarray(clean, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def median_denoise(noisy: np.ndarray) -> np.ndarray:
    """3×3 median filter of every image of (N, C, H, W) (reflected edges)."""
    from scipy.ndimage import median_filter

    return median_filter(noisy, size=(1, 1, 3, 3), mode="reflect")


def noisy_images(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(clean + sigma * rng.standard_normal(clean.shape), 0.0, 1.0)


def _to_model(c: np.ndarray, top: int, levels: int) -> Tensor:
    """Images on [0, 1] (pixel/top) → the flow's input scale, at bin centres (k + ½)/levels."""
    return torch.from_numpy((c * top + 0.5) / levels).to(torch.float32)


def _from_model(x: Tensor, top: int, levels: int) -> np.ndarray:
    return np.clip((x.double().numpy() * levels - 0.5) / top, 0.0, 1.0)


@torch.no_grad()
def latents(model: torch.nn.Module, x: Tensor, batch: int = 500) -> Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch])[0] for i in range(0, len(x), batch)])


@torch.no_grad()
def flow_denoise(model: torch.nn.Module, noisy: np.ndarray, s: float, top: int, levels: int) -> np.ndarray:
    """Noisy images on [0, 1] → encode, shrink the latents (:func:`shrink` at s), decode, clip."""
    model.eval()
    x = _to_model(noisy, top, levels)
    out = []
    for i in range(0, len(x), 500):
        z, _ = model(x[i : i + 500])
        out.append(model.inverse(shrink(model.prior, z, s)))
    return _from_model(torch.cat(out), top, levels)


def evaluate_model(
    model: torch.nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    threshold: float,
    top: int,
    levels: int,
    sigmas: tuple[float, ...] = SIGMAS,
    grid: tuple[float, ...] = SHRINK_GRID,
    n_val: int = 200,
) -> dict[str, Any]:
    """Share in spike, probe accuracy and denoising of one trained model.

    ``train``/``test``: (raw images (N, C, H, W) with values 0…top, labels (N,)). The last
    ``n_val`` train images, noised with another seed, choose s for each σ. Returns
    ``{"share", "probe", "denoise": {σ: {"s", "flow", "val"}}}`` (PSNR in dB).
    """
    (tr_img, tr_y), (te_img, te_y) = train, test
    tr_c, te_c = tr_img / top, te_img / top
    z_tr = latents(model, _to_model(tr_c, top, levels))
    z_te = latents(model, _to_model(te_c, top, levels))
    out: dict[str, Any] = {
        "share": spike_share(z_te, threshold),
        "probe": probe_accuracy(z_tr.numpy(), tr_y, z_te.numpy(), te_y),
        "denoise": {},
    }
    val_c = tr_c[-n_val:]
    for j, sigma in enumerate(sigmas):
        val_noisy = noisy_images(val_c, sigma, seed=1000 + j)
        scores = [psnr(flow_denoise(model, val_noisy, s, top, levels), val_c) for s in grid]
        best = int(np.argmax(scores))
        te_noisy = noisy_images(te_c, sigma, seed=j)
        out["denoise"][sigma] = {
            "s": grid[best],
            "val": scores[best],
            "flow": psnr(flow_denoise(model, te_noisy, grid[best], top, levels), te_c),
        }
    return out


def reference_rows(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], top: int, sigmas=SIGMAS
) -> dict[str, Any]:
    """The prior-free figures: the pixel probe, and PSNR of the noisy input and the median filter."""
    (tr_img, tr_y), (te_img, te_y) = train, test
    te_c = te_img / top
    ref: dict[str, Any] = {"probe": probe_accuracy(tr_img / top, tr_y, te_c, te_y), "noisy": {}, "median": {}}
    for j, sigma in enumerate(sigmas):
        noisy = noisy_images(te_c, sigma, seed=j)
        ref["noisy"][sigma] = psnr(noisy, te_c)
        ref["median"][sigma] = psnr(median_denoise(noisy), te_c)
    return ref


# -- the benchmark -----------------------------------------------------------------------------
def _train_all(
    template: str, steps: int, out_dir: Path, quiet: bool, eval_every: int
) -> tuple[dict[str, dict[str, Any]], dict[str, torch.nn.Module], float]:
    import flowdsl
    from flowdsl.runtime.priors.spike_slab import SpikeSlabPrior
    from flowdsl.runtime.training import load_model, train

    anneal = max(1, steps // 2)
    runs, models = {}, {}
    for name, prior in PRIORS.items():
        text = template.format(name=name, prior=prior.format(anneal=anneal), steps=steps, eval_every=eval_every)
        spec = flowdsl.parse(text, filename=f"<bench: sparsity {name}>")
        t0 = time.time()
        s = train(spec, steps=steps, out=out_dir / spec.name, overwrite=True, quiet=quiet, sample_n=0)
        _, model, ckpt = load_model(out_dir / spec.name)
        runs[name] = {
            "bpd": s["test_bpd"],
            "best_step": s["best_step"],
            "seconds": time.time() - t0,
            "params": sum(p.numel() for p in model.parameters()),
        }
        models[name] = model
    ss = SpikeSlabPrior((1,), **{k: v for k, v in spike_slab_args(PRIORS["spike_slab"].format(anneal=1)).items()})
    ss.set_step(ss.anneal)
    return runs, models, float(ss.threshold())


def _tables(title: str, runs: dict, results: dict, ref: dict, threshold: float, sigmas=SIGMAS) -> list[str]:
    lines = [
        title,
        "",
        f"Share in spike: test latents with |z| < z* = {threshold:.4f} (the spike-and-slab prior's crossing point "
        "after annealing, the same for every prior). Probe: standardised logistic regression, train latents → test.",
        "",
        "| prior | parameters | test bits/dim | best step | share in spike | linear probe (test acc.) | wall time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in runs.items():
        res = results[name]
        lines.append(
            f"| `{PRIORS[name].split('(')[0]}` | {r['params']:,} | {r['bpd']:.3f} | {r['best_step']} | "
            f"{100 * res['share']:.1f} % | {100 * res['probe']:.1f} % | {r['seconds']:.0f} s |"
        )
    lines.append(f"| reference: probe on raw pixels | — | — | — | — | {100 * ref['probe']:.1f} % | — |")
    head = "| denoiser | " + " | ".join(f"σ = {s:g}" for s in sigmas) + " |"
    lines += [
        "",
        "Denoising: PSNR (dB) against the clean test images; for the flow, the latent noise level s chosen on 200 "
        "noised train images is in parentheses (s = 0: no shrinkage, the flow's round trip).",
        "",
        head,
        "|---|" + "---:|" * len(sigmas),
        "| noisy input | " + " | ".join(f"{ref['noisy'][s]:.2f}" for s in sigmas) + " |",
        "| 3×3 median filter | " + " | ".join(f"{ref['median'][s]:.2f}" for s in sigmas) + " |",
    ]
    for name in runs:
        d = results[name]["denoise"]
        cells = " | ".join(f"{d[s]['flow']:.2f} (s={d[s]['s']:g})" for s in sigmas)
        lines.append(f"| flow, `{PRIORS[name].split('(')[0]}` prior, posterior-mean shrinkage | {cells} |")
    return lines


def _digits_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    from flowdsl.runtime.data.digits import digits_arrays

    return digits_arrays("train"), digits_arrays("test")


def _mnist_data(limit: int = 10_000) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """MNIST padded to 32×32 (as the spec's input), at most ``limit`` train images for the probe."""
    from flowdsl.runtime.data.idx import find_mnist_dir, load_idx_arrays

    d = find_mnist_dir()
    out = []
    for split, n in (("train", limit), ("test", None)):
        images, labels = load_idx_arrays(d, split)
        images = np.pad(images[:n], ((0, 0), (2, 2), (2, 2)))[:, None].astype(np.int64)
        out.append((images, np.asarray(labels[:n], np.int64)))
    return out[0], out[1]


def sparsity_table(
    steps: int,
    out_dir: str | Path,
    mnist_steps: int = 0,
    quiet: bool = True,
) -> str:
    """Train the three priors on digits (and MNIST when ``mnist_steps`` > 0 and its files are
    found); return the markdown tables."""
    from flowdsl.errors import DataError

    torch.manual_seed(0)
    out_dir = Path(out_dir)
    train, test = _digits_data()
    runs, models, thr = _train_all(DIGITS_SPEC, steps, out_dir, quiet, eval_every=max(1, min(250, steps)))
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the training runs: intra-op threads only slow 8×8 images down on a shared CPU
    try:
        results = {name: evaluate_model(m, train, test, thr, top=16, levels=17) for name, m in models.items()}
    finally:
        torch.set_num_threads(prev_threads)
    ref = reference_rows(train, test, top=16)
    lines = _tables(
        f"### Digits (1×8×8, 17 levels): the same Glow with three priors, {steps} steps each", runs, results, ref, thr
    )
    if mnist_steps > 0:
        try:
            mtrain, mtest = _mnist_data()
        except DataError as e:
            lines += ["", "### MNIST", "", f"not run: {e.message}"]
        else:
            runs, models, thr = _train_all(MNIST_SPEC, mnist_steps, out_dir, quiet, eval_every=1000)
            results = {n: evaluate_model(m, mtrain, mtest, thr, top=255, levels=256) for n, m in models.items()}
            ref = reference_rows(mtrain, mtest, top=255)
            lines += ["", *_tables(f"### MNIST (32×32 padded): {mnist_steps} steps each", runs, results, ref, thr)]
    return "\n".join(lines) + "\n"
