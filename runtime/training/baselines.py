"""Reference densities for the bits/dim tables, computed on the same split as the flows.

For discrete data with ``levels`` levels (bits/dim of the discrete data, lower is better):

* ``uniform``: log2(levels);
* ``gaussian``: one full-covariance Gaussian fitted (maximum likelihood) to the uniformly
  dequantised train split x = (k+u)/levels, scored on the dequantised test split like a flow;
* ``gmm5``: a 5-component full-covariance Gaussian mixture (scikit-learn, EM, seed 0), same;
* ``histogram``: independent per-pixel histograms of the raw values with add-one smoothing, a
  discrete model scored exactly: −mean log2 p(k).

Dequantisation noise is drawn from seeded generators, so the numbers are reproducible.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["baseline_bpd"]


def _deq(k: np.ndarray, levels: int, seed: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(seed))
    return (k + rng.uniform(size=k.shape)) / levels


def baseline_bpd(
    train_k, test_k, levels: int, which=("uniform", "gaussian", "gmm5", "histogram"), seed: int = 0
) -> dict[str, float]:
    """Bits/dim of the reference models on ``test_k`` after fitting on ``train_k`` (raw values)."""
    tr = np.asarray(train_k.numpy() if isinstance(train_k, torch.Tensor) else train_k, dtype=np.float64).reshape(
        len(train_k), -1
    )
    te = np.asarray(test_k.numpy() if isinstance(test_k, torch.Tensor) else test_k, dtype=np.float64).reshape(
        len(test_k), -1
    )
    d = tr.shape[1]
    shift = d * math.log(levels)
    out: dict[str, float] = {}
    xtr, xte = _deq(tr, levels, seed), _deq(te, levels, seed + 1)
    if "uniform" in which:
        out["uniform"] = math.log2(levels)
    if "gaussian" in which:
        mu = xtr.mean(0)
        cov = np.cov(xtr, rowvar=False, bias=True) + 1e-9 * np.eye(d)
        sign, logdet = np.linalg.slogdet(cov)
        diff = xte - mu
        maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
        lp = -0.5 * (maha + logdet + d * math.log(2 * math.pi))
        out["gaussian"] = float((-lp.mean() + shift) / (d * math.log(2)))
    if "gmm5" in which:
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(
            n_components=5, covariance_type="full", random_state=seed, reg_covar=1e-6, max_iter=200
        ).fit(xtr)
        out["gmm5"] = float((-gm.score_samples(xte).mean() + shift) / (d * math.log(2)))
    if "histogram" in which:
        k_tr, k_te = tr.astype(np.int64), te.astype(np.int64)
        counts = np.ones((d, levels))
        for j in range(d):
            counts[j] += np.bincount(k_tr[:, j], minlength=levels)[:levels]
        logp = np.log2(counts / counts.sum(1, keepdims=True))
        out["histogram"] = float(-logp[np.arange(d)[None, :], k_te].mean())
    return out
