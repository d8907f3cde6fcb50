"""Every prior against an independent density (torch.distributions or a closed form written
here), in float64, on randomised parameters; sampling moments where they are cheap.

The priors are reached through the public pipeline (``flowdsl.compile(...).prior``), so the test
does not depend on where the prior classes live. Learned parameters are read by name only to
build the reference (``loc``/``log_scale`` for gaussian, ``loc``/``log_b`` for laplace).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

import flowdsl

SHAPES = {"vector": "input vector(dim=5)", "image": "input image(channels=2, height=3, width=2)"}


def prior_of(inp: str, prior: str):
    model = flowdsl.compile(flowdsl.parse(f"flow p {{\n  {inp}\n  prior {prior}\n}}\n"), seed=0).double()
    return model.prior, tuple(model.input_shape)


def randomise(prior, seed: int) -> dict[str, torch.Tensor]:
    """Set every learned parameter to a random value; return them by name (float64 copies)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    with torch.no_grad():
        for name, p in prior.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.7)
            out[name] = p.detach().clone()
    return out


def points(shape, n: int = 64, seed: int = 1, spread: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64) * spread


def summed(lp: torch.Tensor) -> torch.Tensor:
    return lp.reshape(lp.shape[0], -1).sum(1)


def f64(v) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float64)


def close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-10) -> None:
    assert got.dtype == torch.float64 and got.shape == want.shape
    err = float((got.detach() - want.detach()).abs().max())
    assert err <= rel * max(1.0, float(want.abs().max())), f"max |log p − reference| = {err:.3e}"


def _moments(sample, mean, std, n):
    """Per-entry mean and std of ``sample`` (n, ...) within 5 standard errors."""
    m, s = sample.mean(0), sample.std(0)
    assert float(((m - mean).abs() / (std / math.sqrt(n))).max()) < 5.0, "sample mean"
    # std of the sample std ≈ std·sqrt((kurtosis − 1)/(4n)); 0.05 relative is > 5 SE for n = 20 000
    assert float(((s - std).abs() / std).max()) < 0.05, "sample std"


# -- gaussian ---------------------------------------------------------------------------------
@pytest.mark.parametrize("where", SHAPES)
def test_standard_gaussian_against_torch_normal(where):
    prior, shape = prior_of(SHAPES[where], "gaussian")
    assert not list(prior.parameters())
    z = points(shape)
    close(prior.log_prob(z), summed(D.Normal(f64(0.0), f64(1.0)).log_prob(z)))
    # closed form, written out: −½ z² − ½ log 2π per entry
    close(prior.log_prob(z), summed(-0.5 * z * z - 0.5 * math.log(2 * math.pi)))


@pytest.mark.parametrize("where", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_gaussian_against_torch_normal(where, seed):
    prior, shape = prior_of(SHAPES[where], "gaussian(learned=true)")
    p = randomise(prior, seed)
    assert set(p) == {"loc", "log_scale"} and all(v.shape == shape for v in p.values())
    assert float(p["log_scale"].abs().min()) > 0  # a sign error in log σ cannot hide at 0
    mu, sigma = p["loc"], torch.exp(p["log_scale"])
    z = points(shape, seed=seed + 10)
    close(prior.log_prob(z), summed(D.Normal(mu, sigma).log_prob(z)))
    u = (z - mu) / sigma
    close(prior.log_prob(z), summed(-0.5 * u * u - torch.log(sigma) - 0.5 * math.log(2 * math.pi)))


def test_learned_gaussian_sampling_moments_and_temperature():
    prior, shape = prior_of(SHAPES["image"], "gaussian(learned=true)")
    p = randomise(prior, 5)
    mu, sigma = p["loc"], torch.exp(p["log_scale"])
    torch.manual_seed(0)
    n = 20_000
    with torch.no_grad():
        for t in (1.0, 0.5):
            s = prior.sample(n, temperature=t)
            assert s.shape == (n, *shape) and s.dtype == torch.float64
            _moments(s, mu, t * sigma, n)


def test_learned_gaussian_log_prob_gradients_match_reference():
    prior, shape = prior_of(SHAPES["vector"], "gaussian(learned=true)")
    randomise(prior, 3)
    z = points(shape, n=8)
    prior.log_prob(z).sum().backward()
    params = dict(prior.named_parameters())
    loc = params["loc"].detach().clone().requires_grad_(True)
    log_scale = params["log_scale"].detach().clone().requires_grad_(True)
    D.Normal(loc, torch.exp(log_scale)).log_prob(z).sum().backward()
    assert torch.allclose(params["loc"].grad, loc.grad, rtol=1e-10, atol=1e-10)
    assert torch.allclose(params["log_scale"].grad, log_scale.grad, rtol=1e-10, atol=1e-10)


# -- laplace ----------------------------------------------------------------------------------
@pytest.mark.parametrize("where", SHAPES)
@pytest.mark.parametrize("scale", [1.0, 0.37, 2.5])
def test_fixed_laplace_against_torch_laplace(where, scale):
    prior, shape = prior_of(SHAPES[where], f"laplace(scale={scale})")
    assert not list(prior.parameters())
    z = points(shape)
    # the fixed scale is kept as log b in a buffer that is float32 until .double(), so log b is
    # float32-rounded: 1e-7 relative (a scale bug is off by O(1))
    close(prior.log_prob(z), summed(D.Laplace(f64(0.0), f64(scale)).log_prob(z)), rel=1e-7)
    close(prior.log_prob(z), summed(-z.abs() / scale - math.log(2 * scale)), rel=1e-7)


@pytest.mark.parametrize("where", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_learned_laplace_against_torch_laplace(where, seed):
    prior, shape = prior_of(SHAPES[where], "laplace(scale=0.6, learned=true)")
    start = dict(prior.named_parameters())
    assert torch.allclose(start["log_b"], torch.full(shape, math.log(0.6), dtype=torch.float64))
    p = randomise(prior, seed)
    assert set(p) == {"loc", "log_b"}
    mu, b = p["loc"], torch.exp(p["log_b"])
    z = points(shape, seed=seed + 20)
    close(prior.log_prob(z), summed(D.Laplace(mu, b).log_prob(z)))


@pytest.mark.parametrize("learned", [False, True])
def test_laplace_sampling_moments_and_temperature(learned):
    prior, shape = prior_of(SHAPES["image"], f"laplace(scale=1.7, learned={str(learned).lower()})")
    if learned:
        p = randomise(prior, 9)
        mu, b = p["loc"], torch.exp(p["log_b"])
    else:
        mu, b = torch.zeros(shape, dtype=torch.float64), torch.full(shape, 1.7, dtype=torch.float64)
    torch.manual_seed(0)
    n = 20_000
    with torch.no_grad():
        for t in (1.0, 0.5):
            s = prior.sample(n, temperature=t)
            assert s.shape == (n, *shape) and s.dtype == torch.float64
            _moments(s, mu, t * b * math.sqrt(2.0), n)  # Laplace(μ, b): variance 2b²
            # E|z − μ| = b: pins the shape of the distribution, not only its variance
            mad = (s - mu).abs().mean(0)
            assert float(((mad - t * b).abs() / (t * b)).max()) < 0.05


# -- spike and slab ---------------------------------------------------------------------------
def spike_width(spike: float, slab: float, anneal: int, step: int) -> float:
    """σ₀(t): geometric interpolation from the slab's width to ``spike`` over ``anneal`` steps."""
    r = 1.0 if anneal <= 0 else min(step / anneal, 1.0)
    return math.exp((1 - r) * math.log(slab) + r * math.log(spike))


def mixture(spike_sd: float, slab: float, weight: float) -> D.Distribution:
    """(1 − w)·N(0, σ₀²) + w·N(0, σ₁²) as a torch.distributions mixture (float64)."""
    mix = D.Categorical(probs=torch.tensor([1 - weight, weight], dtype=torch.float64))
    comp = D.Normal(torch.zeros(2, dtype=torch.float64), torch.tensor([spike_sd, slab], dtype=torch.float64))
    return D.MixtureSameFamily(mix, comp)


SPIKE_SLAB = [  # (spike, slab, weight, anneal)
    (0.01, 1.0, 0.5, 0),
    (0.07, 1.3, 0.3, 50),
    (0.2, 2.5, 0.85, 7),
]


@pytest.mark.parametrize("where", SHAPES)
@pytest.mark.parametrize("spike,slab,weight,anneal", SPIKE_SLAB)
def test_spike_slab_against_torch_mixture_along_the_schedule(where, spike, slab, weight, anneal):
    prior, shape = prior_of(SHAPES[where], f"spike_slab(spike={spike}, slab={slab}, weight={weight}, anneal={anneal})")
    z = torch.cat([points(shape, n=48, spread=slab), points(shape, n=16, seed=4, spread=spike)])
    for step in sorted({0, 1, anneal // 3, anneal // 2, anneal, anneal + 5, 10 * anneal + 3}):
        prior.set_step(step)
        ref = mixture(spike_width(spike, slab, anneal, step), slab, weight)
        close(prior.log_prob(z), summed(ref.log_prob(z)))


def test_spike_slab_density_written_out():
    """Closed form, independent of torch.distributions: log Σ_k π_k · exp(−z²/2σ_k²)/(σ_k √2π)."""
    prior, shape = prior_of(SHAPES["vector"], "spike_slab(spike=0.05, slab=1.5, weight=0.25, anneal=40)")
    prior.set_step(10)
    s0 = 1.5**0.75 * 0.05**0.25
    z = points(shape, n=32, spread=1.0)
    dens = 0.75 * torch.exp(-0.5 * (z / s0) ** 2) / (s0 * math.sqrt(2 * math.pi))
    dens = dens + 0.25 * torch.exp(-0.5 * (z / 1.5) ** 2) / (1.5 * math.sqrt(2 * math.pi))
    close(prior.log_prob(z), summed(torch.log(dens)))


@pytest.mark.parametrize("step", [0, 20, 40])
def test_spike_slab_sampling_moments_and_temperature(step):
    spike, slab, weight, anneal = 0.05, 1.5, 0.3, 40
    args = f"spike={spike}, slab={slab}, weight={weight}, anneal={anneal}"
    prior, shape = prior_of(SHAPES["image"], f"spike_slab({args})")
    prior.set_step(step)
    s0 = spike_width(spike, slab, anneal, step)
    n = 20_000
    torch.manual_seed(0)
    for t in (1.0, 0.6):
        s = prior.sample(n, temperature=t).to(torch.float64)
        assert s.shape == (n, *shape)
        var = t * t * ((1 - weight) * s0**2 + weight * slab**2)
        assert abs(float(s.var()) / var - 1) < 0.03, (float(s.var()), var)
        mad = t * math.sqrt(2 / math.pi) * ((1 - weight) * s0 + weight * slab)  # E|z|
        assert abs(float(s.abs().mean()) / mad - 1) < 0.03, (float(s.abs().mean()), mad)
