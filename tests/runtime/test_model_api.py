"""The public API contract (parse, compile, forward, inverse, log_prob, sample), on image and vector flows."""
from __future__ import annotations

import json

import pytest
import torch

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
    assert torch.allclose(lp, model.prior.log_prob(z) + logdet)
    s = model.sample(3, temperature=0.5)
    assert s.shape == (3, *model.input_shape)
    scales = model.latent_scales()
    assert scales.shape == tuple(model.input_shape) and scales.dtype == torch.long


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
    assert g.total_params() == sum(p.numel() for p in m.parameters() if p is not m.prior.loc and p is not m.prior.log_scale)
    splits = [n for n in layer_nodes if n.kind == "split"]
    assert all(n.latent_shape is not None for n in splits) and len(g.latents) == 3
