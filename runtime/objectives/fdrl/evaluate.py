"""Offline evaluation: energy distance, Fréchet distance in a classifier's feature space, and
class-conditional accuracy.

``energy_distance(x, y)``
    E(X, Y) = 2·E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖ on flattened samples, with the unbiased
    (U-statistic) within-sample terms, so two samples of one distribution give ≈ 0 (it can be
    slightly negative). Computed in float64, in chunks.
``frechet_distance(fa, fb)``
    ‖μa − μb‖² + tr(Σa + Σb − 2(Σa^½ Σb Σa^½)^½) between Gaussians fitted to two feature sets
    (the FID formula; here with features of our own small digits classifier, so the numbers are
    comparable with each other, not with published FIDs). Symmetric square roots come from
    eigendecompositions in float64 (no complex parts).

The ``flowdsl fdrl-eval`` command (:mod:`flowdsl.runtime.objectives.fdrl.cli`) uses :func:`evaluate_images`
and :func:`evaluate_vectors`.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

__all__ = [
    "energy_distance",
    "frechet_distance",
    "feature_stats",
    "class_accuracy",
    "evaluate_vectors",
    "evaluate_images",
]


def _mean_dist(a: Tensor, b: Tensor, same: bool, chunk: int = 2048) -> float:
    total = 0.0
    for i in range(0, a.shape[0], chunk):
        total += float(torch.cdist(a[i : i + chunk], b).sum())
    n, m = a.shape[0], b.shape[0]
    return total / (n * (n - 1)) if same else total / (n * m)


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance between samples ``x`` (n, …) and ``y`` (m, …), flattened, in float64."""
    a = x.detach().reshape(x.shape[0], -1).to(torch.float64).cpu()
    b = y.detach().reshape(y.shape[0], -1).to(torch.float64).cpu()
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("energy_distance needs at least 2 samples on each side")
    return 2.0 * _mean_dist(a, b, False) - _mean_dist(a, a, True) - _mean_dist(b, b, True)


def feature_stats(f: Tensor) -> tuple[Tensor, Tensor]:
    f = f.detach().to(torch.float64).cpu()
    mu = f.mean(0)
    fc = f - mu
    return mu, fc.T @ fc / max(1, f.shape[0] - 1)


def _sqrtm_psd(a: Tensor) -> Tensor:
    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(fa: Tensor, fb: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``fa`` (n, d) and ``fb`` (m, d)."""
    mu_a, s_a = feature_stats(fa)
    mu_b, s_b = feature_stats(fb)
    ra = _sqrtm_psd(s_a)
    cross = _sqrtm_psd(ra @ s_b @ ra)
    return float(((mu_a - mu_b) ** 2).sum() + torch.trace(s_a) + torch.trace(s_b) - 2.0 * torch.trace(cross))


@torch.no_grad()
def class_accuracy(classifier: Any, x: Tensor, labels: Tensor, batch: int = 512) -> float:
    """Share of ``x`` the classifier assigns to ``labels``."""
    pred = torch.cat([classifier(x[i : i + batch]).argmax(-1) for i in range(0, len(x), batch)])
    return float((pred == labels.to(pred.device)).float().mean())


def evaluate_vectors(samples: dict[str, Tensor], reference: Tensor) -> dict[str, float]:
    """Energy distance of each named sample set (data scale) to the reference samples."""
    return {k: energy_distance(v, reference) for k, v in samples.items()}


@torch.no_grad()
def evaluate_images(
    samples: dict[str, Tensor],
    reference: Tensor,
    classifier: Any,
    labels: Optional[dict[str, Tensor]] = None,
    quantize: Optional[Any] = None,
    small: int = 0,
) -> dict[str, dict[str, float]]:
    """Fréchet distance (classifier features) to ``reference`` for each named image set (model
    scale), plus the classifier's accuracy on the requested ``labels`` where given, plus the
    energy distance in pixel space. ``quantize`` (e.g. :meth:`DataScale.quantize`) is applied to
    every sample set first, so all are compared as images of the data's levels.

    The Fréchet distance is biased upward for small sets (64-d features), so it is only
    comparable between sets of one size; with ``small`` > 0 each row also gets ``frechet_small``,
    the mean over the first ⌊n/small⌋ disjoint subsets of ``small`` samples (e.g. the size of a
    held-out split, to compare with that split's own distance)."""
    q = quantize or (lambda t: t)
    ref_f = classifier.features(reference)
    res: dict[str, dict[str, float]] = {}
    for name, x in samples.items():
        xq = q(x)
        f = classifier.features(xq)
        row = {"frechet": frechet_distance(f, ref_f), "energy": energy_distance(xq, reference), "n": float(len(x))}
        if small and len(x) >= small:
            parts = [frechet_distance(f[i : i + small], ref_f) for i in range(0, len(x) - small + 1, small)][:8]
            row["frechet_small"] = sum(parts) / len(parts)
        if labels is not None and name in labels:
            row["accuracy"] = class_accuracy(classifier, xq, labels[name])
        res[name] = row
    return res
