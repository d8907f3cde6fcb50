"""The public API contract (parse, compile, forward, inverse, log_prob, sample), on image and vector flows."""

from __future__ import annotations

import json
import math

import pytest
import torch
from flowtest import compiled, jacobian
from torch import distributions as D

import flowdsl
from flowdsl.schema import FlowSpec

GLOW = """
block step(hidden=16) {
    actnorm
    conv1x1
    coupling(hidden=$hidden)
}
flow small {
    input image(channels=1, height=8, width=8, levels=17)
    repeat 2 { squeeze repeat 2 { step } split }
    repeat 2 { step(hidden=8) }
    prior gaussian(learned=true)
    train(batch=16, steps=10, seed=3)
}
"""

VECTOR = """
flow vec {
    input vector(dim=6)
    repeat 3 { actnorm coupling(hidden=16) permute(kind=shuffle, seed=1) }
    split
    conv1x1(param=plain)
    prior laplace(scale=0.5)
}
"""


@pytest.fixture(params=[GLOW, VECTOR], ids=["glow", "vector"])
def model(request):
    return flowdsl.compile(flowdsl.parse(request.param))


def test_shapes_and_signatures(model):
    x = torch.rand(5, *model.input_shape)
    z, logdet = model(x)
    assert z.shape == x.shape and logdet.shape == (5,)
    assert model.inverse(z).shape == x.shape
    lp = model.log_prob(x)
    assert lp.shape == (5,) and torch.isfinite(lp).all()
    s = model.sample(3, temperature=0.5)
    assert s.shape == (3, *model.input_shape)
    scales = model.latent_scales()
    assert scales.shape == tuple(model.input_shape) and scales.dtype == torch.long


def reference_prior_log_prob(model, z: torch.Tensor) -> torch.Tensor:
    """The prior's density written here from its parameters (torch.distributions), summed per example."""
    state = {**dict(model.prior.named_buffers()), **dict(model.prior.named_parameters())}
    name = model.spec.prior.name
    if name == "gaussian":
        dist = D.Normal(state["loc"].detach(), torch.exp(state["log_scale"].detach()))
    elif name == "laplace":
        dist = D.Laplace(state["loc"].detach(), torch.exp(state["log_b"].detach()))
    else:  # pragma: no cover
        raise AssertionError(f"no reference for prior {name}")
    return dist.log_prob(z).reshape(z.shape[0], -1).sum(1)


@pytest.mark.parametrize("text", [GLOW, VECTOR], ids=["glow", "vector"])
def test_log_prob_is_change_of_variables_with_an_autograd_jacobian(text):
    """log p(x) = log p_Z(z) + log|det ∂z/∂x|, with the Jacobian of the whole flow by autograd
    (float64) and the prior density written independently; the prior's learned parameters are
    random, so no term can hide at zero."""
    model, x = compiled(text, seed=4, batch=3)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.prior.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    shape = tuple(model.input_shape)
    n = math.prod(shape)
    with torch.no_grad():
        lp = model.log_prob(x)
        z, _ = model(x)
    assert lp.dtype == torch.float64 and lp.shape == (3,)
    for i in range(3):
        jac = jacobian(lambda v: model(v.reshape(1, *shape))[0].reshape(-1), x[i].reshape(-1)).reshape(n, n)
        want = reference_prior_log_prob(model, z[i : i + 1])[0] + torch.linalg.slogdet(jac)[1]
        assert abs(float(lp[i] - want)) <= 1e-9 * max(1.0, abs(float(want))), (float(lp[i]), float(want))


@pytest.mark.parametrize(
    "prior", ["gaussian(learned=true)", "laplace(scale=0.7, learned=true)", "spike_slab(spike=0.3, weight=0.6)"]
)
def test_density_of_a_2d_flow_integrates_to_one(prior):
    """Change of variables checked numerically: exp(log p(x)) of a randomised 2-D flow sums to 1
    over a fine grid (no Jacobian or prior formula from the library is used)."""
    body = "repeat 2 { actnorm coupling(hidden=8) permute(kind=reverse) }"
    text = f"flow two {{ input vector(dim=2) {body} prior {prior} }}"
    model, _ = compiled(text, seed=2)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.prior.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.3)
    t = torch.linspace(-12, 12, 961, dtype=torch.float64)
    grid = torch.cartesian_prod(t, t)
    with torch.no_grad():
        dens = torch.exp(model.log_prob(grid)).reshape(len(t), len(t))
    total = float(torch.trapezoid(torch.trapezoid(dens, t, dim=1), t))
    assert abs(total - 1.0) < 2e-3, total


def test_latent_scales_follow_splits():
    m = flowdsl.compile(flowdsl.parse(GLOW))
    counts = torch.bincount(m.latent_scales().flatten()).tolist()
    # 64 dims: first split leaves 32 (scale 0), second 16 (scale 1), the final 16 (scale 2)
    assert counts == [32, 16, 16]
    z = torch.randn(2, *m.input_shape)
    by = m.latents_by_level(z)
    assert [v.shape[1] for v in by.values()] == [32, 16, 16]


def test_sampling_inverts_latents_from_prior():
    m = flowdsl.compile(flowdsl.parse(GLOW)).double().eval()
    torch.manual_seed(1)
    x = m.sample(4)
    z, _ = m(x)
    assert torch.allclose(m.inverse(z), x, atol=1e-10)


def test_double_float_and_state_dict_roundtrip(model):
    x = torch.rand(3, *model.input_shape)
    model.train()
    model(x)
    model.eval()
    d = model.double()
    z, ld = d(x.double())
    assert z.dtype == torch.float64 and ld.dtype == torch.float64
    f = d.float()
    state = f.state_dict()
    other = flowdsl.compile(model.spec)
    other.load_state_dict(state)
    other.eval()
    with torch.no_grad():
        assert torch.allclose(other(x)[0], f(x)[0], atol=1e-6)


def test_compile_is_deterministic_and_seeded():
    spec = flowdsl.parse(GLOW)
    a, b = flowdsl.compile(spec), flowdsl.compile(spec)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = flowdsl.compile(spec, seed=99)
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))
    state = torch.random.get_rng_state()
    flowdsl.compile(spec)
    assert torch.equal(state, torch.random.get_rng_state()), "compile must not disturb the global RNG"


def test_fuse_matches_and_is_independent():
    m = flowdsl.compile(flowdsl.parse(GLOW))
    x = torch.rand(4, *m.input_shape)
    m.train()
    m(x)
    m.eval()
    f = m.fuse()
    with torch.no_grad():
        z, ld = m(x)
        zf, ldf = f(x)
        assert torch.allclose(z, zf, atol=1e-5) and torch.allclose(ld, ldf, atol=1e-4)
        assert torch.allclose(f.inverse(z), m.inverse(z), atol=1e-5)
        assert torch.allclose(f.log_prob(x), m.log_prob(x), atol=1e-4)
    assert not f.training


def test_actnorm_initialises_on_first_training_batch_only():
    m = flowdsl.compile(flowdsl.parse(GLOW))
    x = torch.rand(32, *m.input_shape) * 3 + 2
    m.eval()
    m(x)
    assert float(m.steps[1].initialized) == 0
    m.train()
    h, _ = m.steps[0](x)
    y, _ = m.steps[1](h)
    assert float(m.steps[1].initialized) == 1
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (y.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3
    before = m.steps[1].log_scale.detach().clone()
    m.steps[1](h * 5)
    assert torch.equal(before, m.steps[1].log_scale.detach())


def test_parse_gives_spec_models_with_json_schema():
    spec = flowdsl.parse(GLOW, filename="glow.flow")
    assert isinstance(spec, FlowSpec)
    assert spec.input.shape == (1, 8, 8) and spec.input.levels == 17 and spec.dequantize == "uniform"
    assert spec.prior.name == "gaussian" and spec.prior.args.learned is True
    assert spec.train.batch == 16 and spec.train.seed == 3
    assert len(spec.layers) == 2 * (1 + 2 * 3 + 1) + 2 * 3
    assert spec.layers[1].via == ("step",) and spec.layers[1].span.line == 3
    schema = FlowSpec.model_json_schema()
    json.dumps(schema)
    assert "layers" in schema["properties"]
    assert len(spec.sha256) == 64


def test_graph_nodes_carry_shapes_params_and_locations():
    spec = flowdsl.parse(GLOW)
    g = spec.graph
    layer_nodes = list(g.layers())
    assert len(layer_nodes) == len(spec.layers)
    for n in layer_nodes:
        assert n.in_shape is not None and n.out_shape is not None and n.span.line > 0 and n.n_params is not None
    m = flowdsl.compile(spec)
    assert g.total_params() == sum(
        p.numel() for p in m.parameters() if p is not m.prior.loc and p is not m.prior.log_scale
    )
    splits = [n for n in layer_nodes if n.kind == "split"]
    assert all(n.latent_shape is not None for n in splits) and len(g.latents) == 3
