"""``prior student_t``: the factorised Student-t base against independent references.

Density: scipy.stats.t and torch.distributions.StudentT in float64 (fixed and randomised learned
parameters, through the public pipeline); the elementwise lgamma and expm1 against math's.
Sampling: Kolmogorov-Smirnov tests against scipy's t CDF at α = 1e-6 (fixed seeds) for ``sample``
and for ``from_noise`` fed with numpy noise (the prior.onnx recipe), and prior.onnx against
``from_noise`` on the same noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import distributions as D

import flowdsl
from flowdsl.errors import CheckError
from flowdsl.runtime.priors.student_t import expm1, lgamma

SHAPES = {"vector": "input vector(dim=5)", "image": "input image(channels=2, height=3, width=2)"}
ALPHA = 1e-6


def prior_of(inp: str, prior: str):
    model = flowdsl.compile(flowdsl.parse(f"flow p {{\n  {inp}\n  prior {prior}\n}}\n"), seed=0).double()
    return model.prior, tuple(model.input_shape)


def randomise(prior, seed: int) -> dict[str, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in prior.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.8)
    return {n: p.detach().numpy().copy() for n, p in prior.named_parameters()}


def ks_crit(n: int) -> float:
    return math.sqrt(-math.log(ALPHA / 2) / 2) / math.sqrt(n)


def points(shape, n=64, seed=1, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, *shape, generator=g, dtype=torch.float64) * spread
    z[0] = 0.0
    z[1] = 1e4  # far tail: log1p keeps it finite and exact
    return z


def test_lgamma_and_expm1_against_math():
    x = torch.tensor([1e-6, 1e-3, 0.1, 0.5, 1.0, 1.5, 2.0, 3.7, 9.99, 10.0, 57.3, 1e3, 2.5e5, 1e6], dtype=torch.float64)
    want = torch.tensor([math.lgamma(v) for v in x.tolist()], dtype=torch.float64)
    err = (lgamma(x) - want).abs() / want.abs().clamp(min=1.0)
    assert float(err.max()) < 1e-11, err
    y = torch.tensor([0.0, 1e-300, 1e-20, 1e-9, 1e-4, 0.3, 1.0, 20.0, 80.0], dtype=torch.float64)
    want = torch.tensor([math.expm1(v) for v in y.tolist()], dtype=torch.float64)
    assert float(((expm1(y) - want).abs() / want.clamp(min=1e-300)).max()) < 1e-14
    y32 = y[3:].float()  # float32 too (on float32 inputs)
    want32 = torch.tensor([math.expm1(v) for v in y32.double().tolist()], dtype=torch.float64)
    assert float(((expm1(y32).double() - want32).abs() / want32).max()) < 1e-6


@pytest.mark.parametrize("where", SHAPES)
@pytest.mark.parametrize("df", [0.5, 1.0, 3.0, 5.0, 42.0])
def test_fixed_density_against_scipy_t(where, df):
    prior, shape = prior_of(SHAPES[where], f"student_t(df={df})")
    assert not list(prior.parameters())
    z = points(shape)
    got = prior.log_prob(z)
    assert got.dtype == torch.float64 and got.shape == (64,)
    want = stats.t(df).logpdf(z.numpy()).reshape(64, -1).sum(1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("where", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_density_against_scipy_and_torch(where, seed):
    prior, shape = prior_of(SHAPES[where], "student_t(df=2.5, learned=true)")
    start = {n: p.detach().clone() for n, p in prior.named_parameters()}
    assert set(start) == {"loc", "log_scale", "log_df"} and all(v.shape == shape for v in start.values())
    torch.testing.assert_close(
        start["log_df"], torch.full(shape, math.log(2.5), dtype=torch.float64), rtol=0, atol=1e-7
    )
    assert float(start["loc"].abs().max()) == 0.0 and float(start["log_scale"].abs().max()) == 0.0
    p = randomise(prior, seed)
    mu, sigma, nu = p["loc"], np.exp(p["log_scale"]), np.exp(p["log_df"])
    z = points(shape, seed=seed + 5)
    got = prior.log_prob(z).detach()
    want = stats.t(nu, loc=mu, scale=sigma).logpdf(z.numpy()).reshape(64, -1).sum(1)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)
    ref = D.StudentT(torch.from_numpy(nu), torch.from_numpy(mu), torch.from_numpy(sigma)).log_prob(z)
    torch.testing.assert_close(got, ref.reshape(64, -1).sum(1), rtol=1e-10, atol=1e-10)


def test_learned_gradients_match_torch_student_t():
    """Gradients through the elementwise lgamma (log ν) agree with torch's lgamma/digamma."""
    prior, shape = prior_of(SHAPES["vector"], "student_t(df=4.0, learned=true)")
    randomise(prior, 3)
    z = points(shape, n=10, spread=2.0)
    z[1] = 7.0
    prior.log_prob(z).sum().backward()
    ps = dict(prior.named_parameters())
    loc, ls, ld = (ps[n].detach().clone().requires_grad_(True) for n in ("loc", "log_scale", "log_df"))
    D.StudentT(torch.exp(ld), loc, torch.exp(ls)).log_prob(z).sum().backward()
    for name, ref in (("loc", loc), ("log_scale", ls), ("log_df", ld)):
        torch.testing.assert_close(ps[name].grad, ref.grad, rtol=1e-9, atol=1e-10)


def test_param_counts_in_check():
    for learned, want in (("true", 3 * 12), ("false", 0)):
        graph = flowdsl.check_graph(flowdsl.parse(f"flow p {{ {SHAPES['image']} prior student_t(learned={learned}) }}"))
        assert graph.prior_params() == want
        prior, _ = prior_of(SHAPES["image"], f"student_t(learned={learned})")
        assert sum(p.numel() for p in prior.parameters()) == want


@pytest.mark.parametrize(
    "arg,sub",
    [("df=0", "must be > 0"), ("df=-2.5", "must be > 0"), ("df=1e9", "above 1e+06")],
)
def test_bad_df_is_located(arg, sub):
    text = f"flow p {{\n    input vector(dim=4)\n    prior student_t({arg})\n}}\n"
    with pytest.raises(CheckError) as info:
        flowdsl.compile(flowdsl.parse(text, filename="bad.flow"))
    e = info.value
    assert sub in str(e) and (e.line, e.column) == (3, 24), str(e)


def _standardised_ks(s: np.ndarray, mu, sigma, nu, t: float) -> float:
    """KS distance of F_ν((z − μ)/(Tσ)) (pooled over entries) from U(0, 1)."""
    n = len(s)
    u = stats.t.cdf((s.reshape(n, -1) - np.ravel(mu)) / (t * np.ravel(sigma)), np.ravel(nu))
    return stats.kstest(u.ravel(), "uniform").statistic


@pytest.mark.parametrize("df", [0.7, 3.0, 30.0])
def test_fixed_sample_and_from_noise_are_t_distributed(df):
    prior, shape = prior_of(SHAPES["vector"], f"student_t(df={df})")
    n = 4_000  # × 5 entries, each entry tested separately
    torch.manual_seed(0)
    for t in (1.0, 0.5):
        s = prior.sample(n, temperature=t)
        assert s.shape == (n, *shape) and s.dtype == torch.float64 and torch.isfinite(s).all()
        for i in range(shape[0]):
            assert stats.kstest(s[:, i].numpy() / t, stats.t(df).cdf).statistic < ks_crit(n)
    rng = np.random.default_rng(2)
    noise = {"uniform": rng.random((n, *shape)), "normal": rng.standard_normal((n, *shape))}
    z = prior.from_noise({k: torch.from_numpy(v) for k, v in noise.items()}, 0.8).numpy()
    assert stats.kstest(z.ravel() / 0.8, stats.t(df).cdf).statistic < ks_crit(z.size)
    # and not a normal of the same scale: the test can tell the tails apart
    if df < 5:
        assert stats.kstest(z.ravel() / 0.8, stats.norm(scale=np.std(z) / 0.8).cdf).statistic > ks_crit(z.size)


def test_learned_sample_and_from_noise_follow_each_entry():
    prior, shape = prior_of(SHAPES["image"], "student_t(df=3.0, learned=true)")
    p = randomise(prior, 8)
    mu, sigma, nu = p["loc"], np.exp(p["log_scale"]), np.exp(p["log_df"])
    n = 5_000
    torch.manual_seed(1)
    with torch.no_grad():
        s = prior.sample(n, temperature=0.7).numpy()
    assert _standardised_ks(s, mu, sigma, nu, 0.7) < ks_crit(s.size)
    rng = np.random.default_rng(4)
    noise = {"uniform": rng.random((n, *shape)), "normal": rng.standard_normal((n, *shape))}
    with torch.no_grad():
        z = prior.from_noise({k: torch.from_numpy(v) for k, v in noise.items()}, 1.0).numpy()
    assert _standardised_ks(z, mu, sigma, nu, 1.0) < ks_crit(z.size)
    # the wrong df in the reference is seen
    assert _standardised_ks(z, mu, sigma, nu * 3, 1.0) > ks_crit(z.size)


def test_extreme_noise_stays_finite():
    for dtype in (torch.float32, torch.float64):
        for df in (0.05, 1.0, 5.0):
            prior, shape = prior_of("input vector(dim=6)", f"student_t(df={df})")
            prior = prior.to(dtype)
            top = 1.0 - torch.finfo(dtype).eps / 2  # the largest value torch.rand returns
            v = torch.tensor([[0.0, top, 0.5, 1e-30, top, 0.25]], dtype=dtype)
            eps = torch.tensor([[0.0, 9.0, -9.0, 40.0, -40.0, 1.0]], dtype=dtype)
            z = prior.from_noise({"uniform": v, "normal": eps}, 1.0)
            assert torch.isfinite(z).all() and float(z[0, 0]) == 0.0, (dtype, df, z)
            assert float(z[0, 1].abs()) > 1e3 or df >= 5  # the far tail is reached, capped
            assert torch.isfinite(prior.log_prob(z)).all()


def test_prior_onnx_and_forward_onnx_parity(tmp_path):
    import onnxruntime as ort

    from flowdsl.runtime.export.onnx import check_parity

    spec = flowdsl.parse("flow t { input vector(dim=6) actnorm prior student_t(df=3.0, learned=true) }")
    model = flowdsl.compile(spec, seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.prior.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    model.eval()
    paths = flowdsl.export_onnx(model, tmp_path)
    res = check_parity(model.fuse(), *paths)
    assert res["log_prob_rel"] < 1e-4 and res["z_rel"] < 1e-4
    sess = ort.InferenceSession(str(tmp_path / "prior.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        "uniform": rng.random((256, 6), dtype=np.float32),
        "normal": rng.standard_normal((256, 6), dtype=np.float32),
        "temperature": np.array([0.7], np.float32),
    }
    assert {i.name for i in sess.get_inputs()} == set(feeds)
    (z,) = sess.run(None, feeds)
    with torch.no_grad():
        want = model.prior.from_noise({k: torch.from_numpy(feeds[k]) for k in ("uniform", "normal")}, 0.7).numpy()
    assert np.all(np.abs(z - want) <= 1e-4 * np.maximum(1.0, np.abs(want)))
