"""The spike-and-slab benchmark's measurements (runtime/bench/sparsity.py) on tiny inputs: the
latent shrinkage against the posterior mean by quadrature, PSNR and the median filter against
direct numpy, the probe on separable and on random labels, and one evaluation of a tiny model.
The benchmark's figures themselves live in BENCHMARKS.md (``flowdsl bench-training``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import flowdsl
from flowdsl.runtime.bench.sparsity import (
    PRIORS,
    evaluate_model,
    flow_denoise,
    median_denoise,
    probe_accuracy,
    psnr,
    reference_rows,
    shrink,
    spike_share,
)


def _prior(text: str):
    return flowdsl.compile(flowdsl.parse(f"flow p {{ input vector(dim=1) prior {text} }}"), seed=0).double().prior


def _posterior_mean(log_prior, y: float, s: float) -> float:
    """E[θ | y] for y = θ + N(0, s²), by quadrature on a fine grid (independent of the closed forms)."""
    th = torch.linspace(-15, 15, 150_001, dtype=torch.float64)
    w = torch.softmax(log_prior(th) - 0.5 * (th - y) ** 2 / s**2, 0)
    return float((w * th).sum())


@pytest.mark.parametrize(
    "text,log_prior",
    [
        ("gaussian", lambda t: -0.5 * t * t),
        ("laplace(scale=0.7)", lambda t: -t.abs() / 0.7),
        (
            "spike_slab(spike=0.05, slab=1.0, weight=0.3)",
            lambda t: torch.logaddexp(
                math.log(0.7) - math.log(0.05) - 0.5 * (t / 0.05) ** 2, math.log(0.3) - 0.5 * t * t
            ),
        ),
    ],
)
def test_shrink_is_the_posterior_mean(text, log_prior):
    prior = _prior(text)
    ys = [-3.0, -0.4, -0.02, 0.0, 0.15, 1.0, 4.5]
    for s in (0.05, 0.3, 1.0):
        got = shrink(prior, torch.tensor(ys, dtype=torch.float64).reshape(-1, 1), s).reshape(-1)
        want = torch.tensor([_posterior_mean(log_prior, y, s) for y in ys], dtype=torch.float64)
        # quadrature error ~1e-7; the prior's fixed constants are float32-rounded (1e-7 relative)
        assert float((got - want).abs().max()) < 1e-6, (text, s, got, want)
    z = torch.randn(5, 1, dtype=torch.float64)
    assert torch.equal(shrink(prior, z, 0.0), z)  # s = 0: no shrinkage


def test_spike_slab_shrinkage_zeroes_small_latents_and_keeps_large_ones():
    prior = _prior("spike_slab(spike=0.01, slab=1.0, weight=0.3)")
    z = torch.tensor([[0.05], [3.0]], dtype=torch.float64)
    out = shrink(prior, z, 0.2)
    assert abs(float(out[0])) < 0.1 * 0.05 and abs(float(out[1]) - 3.0 * 1 / 1.04) < 1e-3


def test_shrink_refuses_a_prior_without_a_rule():
    with pytest.raises(TypeError, match="no shrinkage rule"):
        shrink(_prior("student_t"), torch.zeros(1, 1), 0.5)


def test_share_psnr_and_median_against_direct_numpy():
    assert spike_share(torch.tensor([-0.2, 0.05, 0.3, -0.01]), 0.1) == 0.5
    clean = np.random.default_rng(0).random((3, 1, 5, 6))
    est = clean + 0.1
    assert math.isclose(psnr(est, clean), 20.0, rel_tol=1e-9)  # MSE 0.01 → 20 dB
    assert psnr(clean, clean) == math.inf
    med = median_denoise(clean)
    pad = np.pad(clean, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="symmetric")  # scipy's "reflect"
    want = np.empty_like(clean)
    for i in range(5):
        for j in range(6):
            want[:, :, i, j] = np.median(pad[:, :, i : i + 3, j : j + 3].reshape(3, 1, 9), axis=2)
    np.testing.assert_array_equal(med, want)


def test_probe_separable_and_random_labels():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 6))
    y = (x[:, 0] + 0.5 * x[:, 3] > 0).astype(int)
    assert probe_accuracy(x[:300], y[:300], x[300:], y[300:]) > 0.95
    r = rng.integers(0, 2, 400)
    assert probe_accuracy(x[:300], r[:300], x[300:], r[300:]) < 0.7


def test_evaluate_a_tiny_model():
    text = (
        "flow t { input image(channels=1, height=4, width=4, levels=17) squeeze(factor=2) actnorm "
        "coupling(kind=additive, hidden=4, net=conv, depth=1) prior " + PRIORS["spike_slab"].format(anneal=0) + " }"
    )
    model = flowdsl.compile(flowdsl.parse(text), seed=0).eval()
    rng = np.random.default_rng(2)
    train = (rng.integers(0, 17, (60, 1, 4, 4)), rng.integers(0, 3, 60))
    test = (rng.integers(0, 17, (30, 1, 4, 4)), rng.integers(0, 3, 30))
    grid = (0.0, 0.3, 3.0)
    res = evaluate_model(model, train, test, threshold=0.1, top=16, levels=17, sigmas=(0.1, 0.3), grid=grid, n_val=20)
    assert set(res) == {"share", "probe", "denoise"} and 0 <= res["share"] <= 1 and 0 <= res["probe"] <= 1
    ref = reference_rows(train, test, top=16, sigmas=(0.1, 0.3))
    for sigma in (0.1, 0.3):
        d = res["denoise"][sigma]
        assert d["s"] in grid and math.isfinite(d["flow"])
    # s = 0 is the flow's round trip: the noisy images come back (float32 error only)
    clean = test[0] / 16
    noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)
    back = flow_denoise(model, noisy, 0.0, top=16, levels=17)
    assert np.abs(back - noisy).max() < 1e-5
    assert abs(psnr(back, clean) - psnr(noisy, clean)) < 1e-3
    # a large s pulls every latent into the spike: the output is far from the input
    assert np.abs(flow_denoise(model, noisy, 3.0, top=16, levels=17) - noisy).mean() > 0.01
    assert ref["noisy"][0.1] > ref["noisy"][0.3] and set(ref) == {"probe", "noisy", "median"}
