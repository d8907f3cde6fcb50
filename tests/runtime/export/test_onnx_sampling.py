"""prior.onnx: onnxruntime and numpy alone draw samples of the trained model, for every prior kind.

10,000 samples drawn the ONNX way (numpy noise -> prior.onnx -> inverse.onnx) are compared with
10,000 of ``model.sample`` (PyTorch): per-coordinate mean and variance within 5 standard errors
of their difference, and the log_prob distributions by a two-sample Kolmogorov-Smirnov distance
below its critical value at α = 1e-6. Seeds are fixed, so the test is deterministic; the bounds
come from the standard errors, so it is not tuned to the seeds. Learned prior parameters are set
away from N(0, 1), and the same test rejects the naive recipe (N(0, T²) into inverse.onnx).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import flowdsl
from flowdsl.runtime.export.onnx import sample_onnx

N = 10_000
T = 0.8
ALPHA = 1e-6
#: two-sample KS critical value c(α)·sqrt(2/N), c(α) = sqrt(-ln(α/2)/2)
KS_CRIT = math.sqrt(-math.log(ALPHA / 2) / 2) * math.sqrt(2 / N)

SPEC = """
flow v {{
    input vector(dim=3)
    repeat 2 {{ actnorm coupling(kind=affine, net=mlp, hidden=8, depth=1) permute(kind=reverse) }}
    prior {prior}
}}
"""

PRIORS = [
    "gaussian",
    "gaussian(learned=true)",
    "laplace(scale=0.7)",
    "laplace(scale=0.5, learned=true)",
    "spike_slab(spike=0.05, slab=1.5, weight=0.3, anneal=100)",
    "gmm(components=3, learned=true)",
    "gmm(components=2, learned=false)",
    "student_t(df=4.0)",
    "student_t(df=3.0, learned=true)",
]


def _model(prior: str):
    torch.manual_seed(0)
    model = flowdsl.compile(flowdsl.parse(SPEC.format(prior=prior)), seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():  # a non-trivial flow and prior (learned: away from N(0, 1))
            p.add_(0.4 * torch.randn(p.shape, generator=g))
    if hasattr(model.prior, "set_step"):
        model.prior.set_step(60)  # spike_slab: mid-anneal, the spike's width must be in the graph
    return model.eval()


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(
        np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)))
    )


def _var_se(x: np.ndarray) -> np.ndarray:
    """Standard error of the sample variance, sqrt((m4 - s^4) / n), per column."""
    d = x - x.mean(0)
    m4 = (d**4).mean(0)
    s2 = (d**2).mean(0)
    return np.sqrt(np.maximum(m4 - s2**2, 1e-300) / len(x))


def _same_distribution(a: np.ndarray, lp_a: np.ndarray, b: np.ndarray, lp_b: np.ndarray) -> list[str]:
    """What differs beyond sampling noise between samples a and b (empty: nothing)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    bad = []
    se_mean = np.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
    dm = np.abs(a.mean(0) - b.mean(0))
    if np.any(dm > 5 * se_mean):
        bad.append(f"mean differs by {dm / se_mean} standard errors")
    se_var = np.sqrt(_var_se(a) ** 2 + _var_se(b) ** 2)
    dv = np.abs(a.var(0) - b.var(0))
    if np.any(dv > 5 * se_var):
        bad.append(f"variance differs by {dv / se_var} standard errors")
    ks = _ks(lp_a.astype(np.float64), lp_b.astype(np.float64))
    if not ks < KS_CRIT:
        bad.append(f"log_prob KS distance {ks:.4f} >= {KS_CRIT:.4f}")
    return bad


@pytest.mark.parametrize("prior", PRIORS)
def test_onnx_samples_match_model_sample(prior, tmp_path):
    model = _model(prior)
    flowdsl.export_onnx(model, tmp_path / "onnx")
    x_onnx, lp_onnx = sample_onnx(tmp_path / "onnx", N, temperature=T, seed=0, with_log_prob=True)
    assert x_onnx.shape == (N, 3) and np.isfinite(x_onnx).all()
    torch.manual_seed(1234)
    with torch.no_grad():
        x_torch = model.sample(N, temperature=T)
        lp_torch = model.log_prob(x_torch)
    with torch.no_grad():  # the ONNX log_prob is the model's at those points (parity, not statistics)
        ref = model.log_prob(torch.from_numpy(x_onnx[:500])).numpy()
    np.testing.assert_allclose(lp_onnx[:500], ref, rtol=1e-4, atol=1e-3)
    assert _same_distribution(x_onnx, lp_onnx, x_torch.numpy(), lp_torch.numpy()) == []

    if "learned=true" in prior or "laplace" in prior:  # the old recipe is not the model's sampler
        import onnxruntime as ort

        inv = ort.InferenceSession(str(tmp_path / "onnx" / "inverse.onnx"), providers=["CPUExecutionProvider"])
        fwd = ort.InferenceSession(str(tmp_path / "onnx" / "forward.onnx"), providers=["CPUExecutionProvider"])
        z = (T * np.random.default_rng(0).standard_normal((N, 3))).astype(np.float32)
        (x_naive,) = inv.run(["x"], {"z": z})
        lp_naive = fwd.run(None, {"x": x_naive})[2]
        assert _same_distribution(x_naive, lp_naive, x_torch.numpy(), lp_torch.numpy()) != []


def test_the_statistical_check_can_tell_a_small_shift():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((N, 3)), rng.standard_normal((N, 3))
    assert _same_distribution(a, a[:, 0], b, b[:, 0]) == []
    assert _same_distribution(a + 0.1, a[:, 0], b, b[:, 0]) != []  # 0.1 / sqrt(2/N) ≈ 7 standard errors
    assert _same_distribution(a * 1.08, a[:, 0], b, b[:, 0]) != []
    assert _same_distribution(a, a[:, 0] + 0.15, b, b[:, 0]) != []  # KS distance ≈ 0.06


def test_readme_recipe_runs_with_onnxruntime_and_numpy_only(tmp_path):
    """The README's ONNX recipe, run in a process where importing torch fails."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- onnx-sampling-recipe -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    model = _model("gaussian(learned=true)")
    flowdsl.export_onnx(model, tmp_path / "onnx_out")
    script = (
        textwrap.dedent(
            """
        import sys
        sys.modules["torch"] = None  # importing torch raises ImportError
        """
        )
        + block
        + "\nnp.save('x.npy', x)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (1000, 3) and np.isfinite(x).all()
    # the same numbers as sample_onnx with the same seed (the recipe is that function)
    np.testing.assert_array_equal(x, sample_onnx(tmp_path / "onnx_out", 1000, temperature=0.7, seed=0))


def test_a_prior_without_from_noise_exports_no_prior_graph(tmp_path):
    from flowdsl.runtime.export.pair import verify_export
    from flowdsl.runtime.priors.base import Prior

    class Plain(Prior):  # log_prob and sample only
        def __init__(self, shape):
            super().__init__()
            self.shape = shape

        def log_prob(self, z):
            return -0.5 * (z * z).reshape(len(z), -1).sum(1)

        def sample(self, n, temperature=1.0, device=None, dtype=None):
            return temperature * torch.randn((n, *self.shape), device=device, dtype=dtype)

    model = _model("gaussian")
    model.prior = Plain(model.prior.shape)
    flowdsl.export_onnx(model, tmp_path / "o")
    assert sorted(verify_export(tmp_path / "o")["files"]) == ["forward.onnx", "inverse.onnx"]
    with pytest.raises(flowdsl.FlowDSLError, match="no prior.onnx"):
        sample_onnx(tmp_path / "o", 10)


def test_every_built_in_prior_kind_is_covered_and_exports_its_sampler():
    from flowdsl.runtime.export.prior import can_export_prior
    from flowdsl.runtime.priors import lowered_priors

    covered = {p.split("(")[0] for p in PRIORS}
    assert set(lowered_priors()) <= covered, "a new prior kind needs from_noise and a case in PRIORS"
    for prior in PRIORS:
        assert can_export_prior(_model(prior).prior), prior
