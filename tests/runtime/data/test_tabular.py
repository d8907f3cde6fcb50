"""Tabular sources (wine, breast_cancer, digits64) and the toys' exact log-densities (issue #17 item 8)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import sklearn.datasets as skd
import torch

from flowdsl.cli import main
from flowdsl.errors import DataError
from flowdsl.runtime.data import load_dataset
from flowdsl.runtime.data.toy2d import log_density, sample_toy

SETS = {"wine": (skd.load_wine, 13, 142, 36), "breast_cancer": (skd.load_breast_cancer, 30, 455, 114)}
ALL = {**SETS, "digits64": (skd.load_digits, 64, 1500, 297)}


def _perm_split(n: int, n_train: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.Generator(np.random.PCG64(0)).permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


@pytest.mark.parametrize("name", list(ALL))
def test_shapes_fixed_disjoint_split_and_standardised_train(name):
    loader, dim, n_train, n_test = ALL[name]
    tr = load_dataset(name, (dim,), None, "train", seed=3)
    te = load_dataset(name, (dim,), None, "test", seed=3)
    assert tr.x.shape == (n_train, dim) and te.x.shape == (n_test, dim) and tr.x.dtype == torch.float32
    assert tr.levels is None and tr.labels.shape == (n_train,)
    raw = np.asarray(loader().data, dtype=np.float64)
    a, b = _perm_split(len(raw), n_train)
    assert len(np.intersect1d(a, b)) == 0 and len(a) + len(b) == len(raw)
    # undoing the stored standardisation gives back exactly the split's rows (digits64: k + u with u in [0, 1))
    back_tr, back_te = tr.standardization.inverse(tr.x.double().numpy()), te.standardization.inverse(te.x.numpy())
    if name == "digits64":
        assert np.abs(back_tr - raw[a] - 0.5).max() <= 0.5 + 1e-4  # float32 rounding
        assert np.abs(back_te - raw[b] - 0.5).max() <= 0.5 + 1e-4
    else:
        assert np.allclose(back_tr, raw[a], rtol=1e-5, atol=1e-5 * np.abs(raw).max())
        assert np.allclose(back_te, raw[b], rtol=1e-5, atol=1e-5 * np.abs(raw).max())
    mean, std = tr.x.double().mean(0), tr.x.double().std(0, unbiased=False)
    tol = 1e-5 if name != "digits64" else 0.12  # digits64: exact moments of the dequantised law, sample noise
    assert float(mean.abs().max()) < tol and float((std - 1).abs().max()) < tol
    if name == "digits64":
        assert abs(float(mean.mean())) < 0.01 and abs(float(std.mean()) - 1) < 0.01
    st = tr.standardization
    assert math.isclose(st.log_det, -float(np.log(st.std).sum())) and np.allclose(st.inverse(st.apply(raw)), raw)


@pytest.mark.parametrize("name", list(SETS))
def test_fixed_sets_ignore_the_seed_and_repeat(name):
    _, dim, _, _ = SETS[name]
    x = load_dataset(name, (dim,), None, "train", seed=0).x
    assert torch.equal(x, load_dataset(name, (dim,), None, "train", seed=0).x)
    assert torch.equal(x, load_dataset(name, (dim,), None, "train", seed=7).x)
    ds = load_dataset(name, (dim,), None, "train")
    assert ds.subset([0, 1], split="val").standardization is ds.standardization  # kept by the validation split


def test_digits64_dequantisation_is_seeded_and_uniform():
    a = load_dataset("digits64", (64,), None, "train", seed=1)
    assert torch.equal(a.x, load_dataset("digits64", (64,), None, "train", seed=1).x)
    b = load_dataset("digits64", (64,), None, "train", seed=2)
    assert not torch.equal(a.x, b.x)
    assert np.array_equal(a.standardization.std, b.standardization.std)  # standardisation independent of the seed
    raw = skd.load_digits().data[np.sort(np.random.Generator(np.random.PCG64(0)).permutation(1797)[:1500])]
    frac = a.standardization.inverse(a.x.double().numpy()) - raw  # the noise u, up to float32 rounding
    assert frac.min() > -1e-4 and frac.max() < 1 + 1e-4
    # U[0, 1): mean 1/2, variance 1/12, within a few standard errors over 96,000 values
    assert abs(frac.mean() - 0.5) < 4 * math.sqrt(1 / 12 / frac.size) + 1e-4
    assert abs(frac.var() - 1 / 12) < 0.002
    test1 = load_dataset("digits64", (64,), None, "test", seed=1).x
    assert not torch.equal(test1, load_dataset("digits64", (64,), None, "test", seed=2).x)


def test_dimension_must_match_the_spec():
    with pytest.raises(DataError, match=r"'wine' has shape 13 \(real vectors\).*input is 5") as e:
        load_dataset("wine", (5,), None)
    assert e.value.filename == "wine"
    with pytest.raises(DataError, match="holds real values but the spec's input is discrete"):
        load_dataset("breast_cancer", (30,), 17)


TINY = """flow tiny_{name} {{
    input vector(dim={dim})
    repeat 2 {{ actnorm coupling(kind=affine, net=mlp, hidden=8, depth=1) permute }}
    prior gaussian
    train(data={name}, batch=32, lr=3e-3, steps=3, seed=1)
}}
"""
QUIET = ["--quiet", "--sample-n", "0"]


@pytest.mark.parametrize("name,dim", [("wine", 13), ("checkerboard", 2)])
def test_flowdsl_train_on_a_vector_source(tmp_path, name, dim):
    spec = tmp_path / f"{name}.flow"
    spec.write_text(TINY.format(name=name, dim=dim), encoding="utf-8")
    assert main(["train", str(spec), "--out", str(tmp_path / "r"), *QUIET]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))
    assert summary["data"] == name and summary["step"] == 3 and math.isfinite(summary["test_bpd"])


def test_flowdsl_train_names_the_dimension_mismatch_at_the_data_argument(tmp_path, capsys):
    spec = tmp_path / "w.flow"
    spec.write_text(TINY.format(name="wine", dim=5), encoding="utf-8")
    assert main(["train", str(spec), "--out", str(tmp_path / "r"), *QUIET]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:5:16: error: data 'wine' has shape 13 (real vectors) but the spec's input is 5" in err
    assert main(["train", str(spec), "--data", "digits64", "--out", str(tmp_path / "r"), *QUIET]) == 1
    assert "digits64: error: data 'digits64' has shape 64 (real vectors)" in capsys.readouterr().err


# -- toy densities -------------------------------------------------------------------------------
def _grid(h: float, lim: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    g = np.arange(-lim, lim, h) + h / 2
    xx, yy = np.meshgrid(g, g, indexing="ij")
    return g, np.stack([xx.ravel(), yy.ravel()], 1)


@pytest.mark.parametrize(
    "name,h,tol", [("8gaussians", 0.05, 1e-6), ("checkerboard", 0.05, 1e-9), ("pinwheel", 0.1, 1e-4)]
)
def test_toy_densities_integrate_to_one_and_match_histograms(name, h, tol):
    g, pts = _grid(h)
    dens = np.exp(log_density(name, pts)).reshape(len(g), len(g))
    assert abs(dens.sum() * h * h - 1) < tol
    # counts of 20,000 samples in 1×1 cells against the integrated density (chi-square)
    k = int(round(1 / h))
    cell = dens.reshape(16, k, 16, k).sum((1, 3)) * h * h
    x = sample_toy(name, 20_000, seed=11)
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=16, range=[[-8, 8], [-8, 8]])
    expected = cell * len(x)
    used = expected > 5
    assert counts[~used].sum() <= max(10.0, 3 * expected[~used].sum())
    chi2 = ((counts[used] - expected[used]) ** 2 / expected[used]).sum()
    df = int(used.sum()) - 1
    assert chi2 < df + 5 * math.sqrt(2 * df), (chi2, df)


def test_eight_gaussians_mean_log_density_is_minus_the_entropy():
    x = sample_toy("8gaussians", 40_000, seed=5)
    lp = log_density("eight_gaussians", x)
    s2 = (0.5 / 1.414) ** 2
    neg_entropy = -(math.log(8) + math.log(2 * math.pi * math.e * s2))  # the components barely overlap
    assert abs(lp.mean() - neg_entropy) < 4 * lp.std() / math.sqrt(len(x))


def test_checkerboard_is_uniform_on_its_support():
    x = sample_toy("checkerboard", 2000, seed=0)
    assert np.all(log_density("checkerboard", x) == -math.log(32))
    off = np.array([[1.0, -1.0], [-1.0, 1.0], [4.5, 0.5], [-3.0, 3.0], [3.0, -3.0]])  # light squares, outside
    assert np.all(np.isneginf(log_density("checkerboard", off)))


def test_pinwheel_density_is_the_change_of_variables_of_its_sampler():
    """At a sampled point, the density is at least the term of the arm and latent that made it,
    computed here straight from the sampler's construction (Jacobian by finite differences)."""
    rng = np.random.Generator(np.random.PCG64(2))
    for _ in range(5):
        r, t, k = 1 + 0.3 * rng.standard_normal(), 0.1 * rng.standard_normal(), int(rng.integers(0, 5))

        def fwd(v):
            a = 2 * np.pi * k / 5 + 0.25 * np.exp(v[0])
            return 2 * np.array([v[0] * np.cos(a) + v[1] * np.sin(a), -v[0] * np.sin(a) + v[1] * np.cos(a)])

        v, eps = np.array([r, t]), 1e-6
        jac = np.stack([(fwd(v + eps * e) - fwd(v - eps * e)) / (2 * eps) for e in np.eye(2)], 1)
        term = math.exp(-0.5 * ((r - 1) / 0.3) ** 2 - 0.5 * (t / 0.1) ** 2) / (2 * math.pi * 0.03) / 5
        term /= abs(np.linalg.det(jac))
        p = math.exp(log_density("pinwheel", fwd(v)[None])[0])
        assert p >= term * (1 - 1e-6)
        # the other arms add little at the arm's own point for central latents
        if abs(r - 1) < 0.3 and abs(t) < 0.1:
            assert p < term * 1.5


def test_log_density_refuses_moons_and_bad_shapes():
    with pytest.raises(DataError, match="'moons' has no closed-form density"):
        log_density("moons", np.zeros((3, 2)))
    with pytest.raises(DataError, match="not a toy density"):
        log_density("wine", np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"shape \(n, 2\), got \(3, 3\)"):
        log_density("pinwheel", np.zeros((3, 3)))
