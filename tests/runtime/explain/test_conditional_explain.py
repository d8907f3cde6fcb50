"""RG-Flow explained for conditional models (issue 16): receptive fields, mixing and inpainting
take the model's context as ``model_context=`` and use it (a different label gives different
results; the encoded latents are the model's given the context); a missing context is a
ContextError; incremental (cone) inpainting and ``flowdsl explain`` refuse a conditional model
with a clear FlowDSLError."""

from __future__ import annotations

import pytest
import torch

import flowdsl
from flowdsl.errors import ContextError, FlowDSLError
from flowdsl.runtime.explain.inpaint import inpaint, touched_latents
from flowdsl.runtime.explain.latents import randomise_parameters, sample_latents, scale_mix, temperature_mix
from flowdsl.runtime.explain.receptive import receptive_fields

CRG = """
flow crg {
    input image(channels=1, height=8, width=8)
    context label(classes=3)
    rg(kernel=2) {
        disentangler { coupling(kind=affine, net=mlp, mask=checkerboard, hidden=8) }
        decimator { coupling(kind=affine, net=mlp, mask=checkerboard, hidden=8) }
    }
    prior gaussian(conditional=true)
}
"""


@pytest.fixture(scope="module")
def model():
    m = flowdsl.compile(flowdsl.parse(CRG), seed=0).double()
    return randomise_parameters(m, 0.3, 0).eval()


def test_receptive_fields_and_sampling_use_the_context(model):
    with pytest.raises(ContextError, match="context label"):
        receptive_fields(model, n_samples=2)
    a = receptive_fields(model, n_samples=3, model_context=0)
    b = receptive_fields(model, n_samples=3, model_context=2)
    assert torch.isfinite(a.maps).all() and a.maps.shape == b.maps.shape
    assert float((a.maps - b.maps).abs().max()) > 1e-6  # the label reaches the generator
    # the prior draws are the conditional prior's, given the label (independent: model.sample)
    z = sample_latents(model, 4, 0.7, seed=3, model_context=1)
    torch.manual_seed(3)
    with torch.no_grad():
        x = model.sample(4, 0.7, context=1)
        assert float((model.inverse(z, context=1) - x).abs().max()) <= 1e-10


def test_mixing_takes_the_context(model):
    g = torch.Generator().manual_seed(0)
    xa, xb = (
        torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64),
        torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64),
    )
    labels = torch.tensor([0, 2])
    assert float((scale_mix(model, xa, xb, 0, model_context=labels) - xa).abs().max()) <= 1e-10
    assert float((scale_mix(model, xa, xb, 99, model_context=labels) - xb).abs().max()) <= 1e-10
    with pytest.raises(ContextError):
        scale_mix(model, xa, xb, 1)
    t = temperature_mix(model, 2, 1, seed=5, model_context=labels)
    assert t.shape == (2, 1, 8, 8) and torch.isfinite(t).all()


def test_inpainting_given_the_context(model):
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[1:3, 1:3] = True
    labels = torch.tensor([1, 2])
    with pytest.raises(ContextError):
        inpaint(model, x, mask, steps=2)
    with pytest.raises(FlowDSLError, match="incremental .*context"):
        inpaint(model, x, mask, steps=2, incremental=True, model_context=labels)
    res = inpaint(model, x, mask, steps=20, lr=0.005, model_context=labels)
    assert not res.incremental
    assert res.losses[-1] < res.losses[0]
    assert torch.equal(res.x[:, :, ~mask], x[:, :, ~mask])  # known pixels kept
    # the latents that were not freed are the encoding of the filled image given the labels
    fill = float(x[:, :, ~mask].mean())
    z0 = model(torch.where(mask, torch.full_like(x, fill), x), context=labels)[0]
    assert torch.equal(res.free, touched_latents(model, mask))
    kept = ~res.free
    assert float((res.z[:, kept] - z0[:, kept].detach()).abs().max()) <= 1e-12
    other = model(torch.where(mask, torch.full_like(x, fill), x), context=torch.tensor([0, 0]))[0]
    assert float((res.z[:, kept] - other[:, kept].detach()).abs().max()) > 1e-6  # the labels were used
    # the raw output is the generator given the labels
    assert float((res.raw - model.inverse(res.z, context=labels)).abs().max()) <= 1e-12


def test_the_explain_command_refuses_a_conditional_spec_clearly(tmp_path, capsys):
    from flowdsl.cli import main

    spec = tmp_path / "crg.flow"
    spec.write_text(CRG)
    assert main(["explain", str(spec), "--receptive-fields", "--samples", "2", "-o", str(tmp_path / "rf.png")]) == 1
    err = capsys.readouterr().err
    assert "context label(classes=3)" in err and "model_context" in err and "Traceback" not in err
