"""Conditional gaussian/laplace priors against torch.distributions with the context's parameters
(per-class tables for labels, W·e + b for vector and image embeddings), their zero start, the
sampler as a map of noise, and the parameter count of the compiler's formula."""

from __future__ import annotations

import math

import pytest
import torch
from ctxtest import INFOS, context_value, info, randomize
from torch import distributions as D

from flowdsl.compiler.context import conditional_prior_param_count
from flowdsl.runtime.context import ContextValue
from flowdsl.runtime.priors.gaussian import ConditionalGaussianPrior
from flowdsl.runtime.priors.laplace import ConditionalLaplacePrior

SHAPE = (2, 2, 3)


class _Spec:
    def __init__(self, kind, **kw):
        self.kind = kind
        self.__dict__.update(kw)


SPECS = {
    "label": _Spec("label", classes=3),
    "vector": _Spec("vector", dim=3),
    "image": _Spec("image", channels=2, height=4, width=4),
}


def _params_reference(prior, cv):
    """(loc, log_scale) from the prior's raw parameters, computed independently."""
    p = prior.params
    if cv.raw.dtype == torch.long:
        return p.loc_table[cv.raw], p.log_scale_table[cv.raw] + p.base_log_scale
    e = cv.embedding if cv.embedding.dim() == 2 else cv.embedding.mean(dim=(2, 3))
    h = e @ p.proj.weight.T + p.proj.bias
    n = math.prod(SHAPE)
    return h[:, :n].reshape(-1, *SHAPE), h[:, n:].reshape(-1, *SHAPE) + p.base_log_scale


def make(name, kind):
    inf = INFOS[kind]
    if name == "gaussian":
        return ConditionalGaussianPrior(SHAPE, inf).double()
    return ConditionalLaplacePrior(SHAPE, inf, scale=0.5).double()


@pytest.mark.parametrize("kind", ["label", "vector", "image"])
@pytest.mark.parametrize("name", ["gaussian", "laplace"])
def test_conditional_prior_against_torch_distributions(name, kind):
    prior = make(name, kind)
    assert prior.uses_context
    assert sum(p.numel() for p in prior.parameters()) == conditional_prior_param_count(SPECS[kind], math.prod(SHAPE))
    cv, _ = context_value(INFOS[kind], 4)
    z = torch.randn(4, *SHAPE, dtype=torch.float64)
    # a new conditional prior is the unconditional default
    zero = torch.zeros_like(z)
    base = D.Normal(zero, 1.0) if name == "gaussian" else D.Laplace(zero, 0.5)
    assert torch.allclose(prior.log_prob(z, cv), base.log_prob(z).reshape(4, -1).sum(1), atol=1e-12, rtol=0)
    randomize(prior, seed=3, scale=0.5)
    loc, log_scale = _params_reference(prior, cv)
    dist = D.Normal(loc, log_scale.exp()) if name == "gaussian" else D.Laplace(loc, log_scale.exp())
    ref = dist.log_prob(z).reshape(4, -1).sum(1)
    with torch.no_grad():
        got = prior.log_prob(z, cv)
    assert ((got - ref).abs() / ref.abs().clamp_min(1.0)).max() <= 1e-12
    # the context changes the density
    other = (
        ContextValue((cv.raw + 1) % 3, cv.embedding.flip(0))
        if kind == "label"
        else ContextValue(cv.raw, cv.embedding.flip(0))
    )
    with torch.no_grad():
        assert (prior.log_prob(z, other) - got).abs().max() > 1e-3
    # the sampler as a map of noise: Gaussian z = μ + T·σ·ε; Laplace: the CDF gives the uniform back
    T = 0.7
    with torch.no_grad():
        if name == "gaussian":
            eps = torch.randn(4, *SHAPE, dtype=torch.float64)
            zz = prior.from_noise({"normal": eps}, T, cv)
            assert torch.allclose(zz, loc + T * log_scale.exp() * eps, atol=1e-12)
        else:
            v = torch.rand(4, *SHAPE, dtype=torch.float64)
            zz = prior.from_noise({"uniform": v}, 1.0, cv)
            assert torch.allclose(dist.cdf(zz), v, atol=1e-9)
        s = prior.sample(4, temperature=T, context=cv)
    assert s.shape == (4, *SHAPE) and s.dtype == torch.float64


def test_laplace_starts_at_its_scale_and_image_embeddings_are_pooled():
    inf = info("image", channels=1, height=2, width=2)
    prior = ConditionalLaplacePrior((3,), inf, scale=2.0).double()
    emb = torch.randn(2, inf.width, 2, 2, dtype=torch.float64)
    cv = ContextValue(torch.zeros(2, 1, 2, 2, dtype=torch.float64), emb)
    loc, log_b = prior.params(cv)
    assert torch.equal(loc, torch.zeros(2, 3, dtype=torch.float64))
    assert torch.allclose(log_b, torch.full((2, 3), math.log(2.0), dtype=torch.float64))
    randomize(prior, seed=1)
    pooled = ContextValue(cv.raw, emb.mean(dim=(2, 3)))
    assert all(torch.allclose(a, b, atol=1e-14) for a, b in zip(prior.params(cv), prior.params(pooled)))
