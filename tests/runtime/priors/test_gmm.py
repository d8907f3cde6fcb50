"""``prior gmm``: the diagonal Gaussian mixture base against independent references.

Density: scipy.stats.norm + scipy.special.logsumexp in numpy float64 and torch.distributions'
MixtureSameFamily, on randomised parameters reached through the public pipeline. Sampling: the
first two moments of the mixture and a Kolmogorov-Smirnov test of each coordinate's marginal
(a 1-D mixture of normals, its CDF written with scipy) at α = 1e-6, fixed seeds. ``from_noise``
fed with numpy noise passes the same tests, and prior.onnx reproduces it on the same noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special, stats
from torch import distributions as D

import flowdsl
from flowdsl.errors import CheckError

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


def ref_log_prob(z: np.ndarray, means: np.ndarray, log_scales: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """log Σ_k π_k Π_i N(z_i; μ_ki, σ_ki), numpy/scipy float64, one example at a time."""
    k = len(logits)
    log_w = logits - special.logsumexp(logits)
    out = []
    for zb in z.reshape(len(z), -1):
        comp = [
            log_w[j] + stats.norm.logpdf(zb, means[j].ravel(), np.exp(log_scales[j].ravel())).sum() for j in range(k)
        ]
        out.append(special.logsumexp(comp))
    return np.array(out)


def ks_crit(n: int) -> float:
    return math.sqrt(-math.log(ALPHA / 2) / 2) / math.sqrt(n)


def mixture_cdf(x: np.ndarray, w: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return (w[None] * stats.norm.cdf((x[:, None] - mu[None]) / sd[None])).sum(1)


@pytest.mark.parametrize("where", SHAPES)
@pytest.mark.parametrize("k,seed", [(1, 0), (3, 1), (5, 2)])
def test_learned_density_against_scipy_and_torch_mixture(where, k, seed):
    prior, shape = prior_of(SHAPES[where], f"gmm(components={k}, learned=true)")
    p = randomise(prior, seed)
    assert set(p) == {"means", "log_scales", "logits"}
    assert p["means"].shape == (k, *shape) and p["log_scales"].shape == (k, *shape) and p["logits"].shape == (k,)
    g = torch.Generator().manual_seed(seed + 7)
    z = torch.randn(40, *shape, generator=g, dtype=torch.float64) * 2.5
    got = prior.log_prob(z)
    assert got.dtype == torch.float64 and got.shape == (40,)
    want = ref_log_prob(z.numpy(), p["means"], p["log_scales"], p["logits"])
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-10, atol=1e-10)
    d = math.prod(shape)
    mix = D.MixtureSameFamily(
        D.Categorical(logits=torch.from_numpy(p["logits"])),
        D.Independent(
            D.Normal(
                torch.from_numpy(p["means"]).reshape(k, d), torch.exp(torch.from_numpy(p["log_scales"])).reshape(k, d)
            ),
            1,
        ),
    )
    torch.testing.assert_close(got.detach(), mix.log_prob(z.reshape(40, d)), rtol=1e-10, atol=1e-10)


def test_gradients_match_torch_mixture():
    prior, shape = prior_of(SHAPES["vector"], "gmm(components=3)")
    randomise(prior, 4)
    z = torch.randn(9, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2
    prior.log_prob(z).sum().backward()
    ps = dict(prior.named_parameters())
    m, s, a = (ps[n].detach().clone().requires_grad_(True) for n in ("means", "log_scales", "logits"))
    mix = D.MixtureSameFamily(D.Categorical(logits=a), D.Independent(D.Normal(m, torch.exp(s)), 1))
    mix.log_prob(z).sum().backward()
    for name, ref in (("means", m), ("log_scales", s), ("logits", a)):
        torch.testing.assert_close(ps[name].grad, ref.grad, rtol=1e-9, atol=1e-10)


def test_stable_far_from_every_component():
    """logsumexp: each component's density underflows at |z| = 300 in 30 dims, the log does not."""
    prior, shape = prior_of("input vector(dim=30)", "gmm(components=4)")
    p = randomise(prior, 3)
    z = torch.full((2, 30), 300.0, dtype=torch.float64)
    z[1] = -1e4
    got = prior.log_prob(z)
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got.detach().numpy(), ref_log_prob(z.numpy(), **p), rtol=1e-12)
    assert float(torch.exp(prior.component_log_prob(z).detach()).max()) == 0.0  # the naive sum would be log 0
    zf = torch.full((2, 30), 300.0, dtype=torch.float32)
    assert torch.isfinite(prior.float().log_prob(zf)).all()


def test_fixed_prior_is_the_deterministic_spread_init():
    fixed, shape = prior_of(SHAPES["image"], "gmm(components=4, learned=false)")
    learned, _ = prior_of(SHAPES["image"], "gmm(components=4, learned=true)")
    assert not list(fixed.parameters()) and len(list(learned.parameters())) == 3
    for name in ("means", "log_scales", "logits"):
        torch.testing.assert_close(getattr(fixed, name), getattr(learned, name).detach(), rtol=0, atol=0)
    again, _ = prior_of(SHAPES["image"], "gmm(components=4, learned=false)")
    assert torch.equal(again.means, fixed.means)  # deterministic, not the global RNG
    means = fixed.means
    assert float(means.abs().min()) > 0 and float(means.std(0).min()) > 0.05  # spread out
    torch.testing.assert_close(means.mean(0), torch.zeros(shape, dtype=torch.float64), rtol=0, atol=1e-7)
    assert torch.equal(fixed.log_scales, torch.zeros(4, *shape, dtype=torch.float64))
    assert torch.equal(fixed.logits, torch.zeros(4, dtype=torch.float64))
    # fixed buffers are saved with the model (state_dict) and one component is the standard normal
    assert {"means", "log_scales", "logits"} <= set(fixed.state_dict())
    one, shape1 = prior_of(SHAPES["vector"], "gmm(components=1, learned=false)")
    z = torch.randn(6, *shape1, dtype=torch.float64)
    torch.testing.assert_close(one.log_prob(z), D.Normal(0.0, 1.0).log_prob(z).sum(1).double(), rtol=1e-12, atol=0)


def test_param_counts_in_check():
    for k, learned, want in ((3, "true", 2 * 3 * 4 + 3), (2, "false", 0), (1, "true", 9)):
        text = f"flow p {{ input vector(dim=4) actnorm prior gmm(components={k}, learned={learned}) }}"
        graph = flowdsl.check_graph(flowdsl.parse(text))
        assert graph.prior_params() == want
        prior, _ = prior_of("input vector(dim=4)", f"gmm(components={k}, learned={learned})")
        assert sum(p.numel() for p in prior.parameters()) == want


@pytest.mark.parametrize(
    "arg,sub",
    [("components=0", "must be ≥ 1"), ("components=-3", "must be ≥ 1"), ("components=100000", "above the limit")],
)
def test_bad_components_are_located(arg, sub):
    text = f"flow p {{\n    input vector(dim=4)\n    prior gmm({arg}, learned=false)\n}}\n"
    with pytest.raises(CheckError) as info:
        flowdsl.compile(flowdsl.parse(text, filename="bad.flow"))
    e = info.value
    assert sub in str(e) and (e.line, e.column) == (3, 26), str(e)


def _moments_and_ks(s: np.ndarray, w, mu, sd, t: float) -> None:
    """Mean and variance of every coordinate within 5 standard errors; KS of each marginal."""
    n = len(s)
    s = s.reshape(n, -1)
    mu, sd = mu.reshape(len(w), -1), sd.reshape(len(w), -1) * t
    mean = (w[:, None] * mu).sum(0)
    var = (w[:, None] * (sd**2 + mu**2)).sum(0) - mean**2
    assert np.all(np.abs(s.mean(0) - mean) < 5 * np.sqrt(var / n)), "sample mean"
    assert np.all(np.abs(s.var(0) / var - 1) < 0.06), "sample variance"
    for i in range(s.shape[1]):
        ks = stats.kstest(s[:, i], lambda x, i=i: mixture_cdf(x, w, mu[:, i], sd[:, i])).statistic
        assert ks < ks_crit(n), (i, ks)


@pytest.mark.parametrize("t", [1.0, 0.6])
def test_sample_and_from_noise_follow_the_mixture(t):
    prior, shape = prior_of(SHAPES["image"], "gmm(components=3)")
    p = randomise(prior, 11)
    w = special.softmax(p["logits"])
    mu, sd = p["means"], np.exp(p["log_scales"])
    n = 20_000
    torch.manual_seed(0)
    with torch.no_grad():
        s = prior.sample(n, temperature=t)
    assert s.shape == (n, *shape) and s.dtype == torch.float64
    _moments_and_ks(s.numpy(), w, mu, sd, t)
    rng = np.random.default_rng(1)  # the prior.onnx recipe's noise, drawn with numpy
    noise = {
        "uniform": torch.from_numpy(rng.random((n, *shape))),
        "normal": torch.from_numpy(rng.standard_normal((n, *shape))),
    }
    with torch.no_grad():
        z = prior.from_noise(noise, t)
    _moments_and_ks(z.numpy(), w, mu, sd, t)


def test_component_choice_by_cumulative_weights():
    prior, shape = prior_of(SHAPES["vector"], "gmm(components=4)")
    with torch.no_grad():
        prior.logits.copy_(torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)))
        prior.log_scales.fill_(-30.0)  # σ ≈ 1e-13: z is the chosen mean
    edges = np.cumsum([0.1, 0.2, 0.3, 0.4])
    v = torch.tensor([0.0, 0.05, 0.0999, 0.1001, 0.29, 0.31, 0.59, 0.61, 0.999999, 1 - 2**-53], dtype=torch.float64)
    want = np.searchsorted(edges[:-1], v.numpy(), side="right")
    onehot = prior.choose(v)
    assert torch.equal(onehot.sum(1), torch.ones(len(v), dtype=torch.float64))
    assert onehot.argmax(1).tolist() == want.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    noise = {"uniform": v[:, None].expand(-1, 5).contiguous(), "normal": torch.ones(len(v), 5, dtype=torch.float64)}
    z = prior.from_noise(noise, 1.0)
    torch.testing.assert_close(z, prior.means[torch.from_numpy(want)].detach(), rtol=0, atol=1e-12)
    # frequencies: 40,000 uniforms pick each component in proportion to its weight (5 standard errors)
    u = torch.from_numpy(np.random.default_rng(3).random(40_000))
    freq = prior.choose(u).mean(0).numpy()
    p = np.array([0.1, 0.2, 0.3, 0.4])
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / 40_000)), freq
    # a component of weight 0 is never chosen
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.0, -math.inf, 0.0, 0.0], dtype=torch.float64))
    assert float(prior.choose(u)[:, 1].sum()) == 0.0


def test_temperature_zero_gives_the_component_means():
    prior, shape = prior_of(SHAPES["vector"], "gmm(components=3)")
    randomise(prior, 5)
    with torch.no_grad():
        z = prior.sample(200, temperature=0.0)
    d = torch.cdist(z, prior.means.detach()).min(1).values
    assert float(d.max()) == 0.0


def test_prior_onnx_and_forward_onnx_parity(tmp_path):
    import onnxruntime as ort

    from flowdsl.runtime.export.onnx import check_parity

    spec = flowdsl.parse(
        "flow g { input image(channels=1, height=2, width=2, levels=17) actnorm prior gmm(components=3, learned=true) }"
    )
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
        "uniform": rng.random((64, 1, 2, 2), dtype=np.float32),
        "normal": rng.standard_normal((64, 1, 2, 2), dtype=np.float32),
        "temperature": np.array([0.7], np.float32),
    }
    assert {i.name for i in sess.get_inputs()} == set(feeds)
    (z,) = sess.run(None, feeds)
    with torch.no_grad():
        want = model.prior.from_noise({k: torch.from_numpy(feeds[k]) for k in ("uniform", "normal")}, 0.7).numpy()
    assert np.abs(z - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    assert len({tuple(np.round(r, 4)) for r in want[:, 0, 0, :]}) > 1  # not a constant
