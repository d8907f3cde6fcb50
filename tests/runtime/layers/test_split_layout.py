"""``split`` against its documented layout: kept = x[:, :C − ⌊C/2⌋], latent = x[:, C − ⌊C/2⌋:],
merge = concat(kept, latent); through the public model the latents keep their place in z and
``latent_scales`` marks the last ⌊C/2⌋ channels (entries of a vector) as scale 0."""

from __future__ import annotations

import pytest
import torch

import flowdsl

INPUTS = {
    "vector5": ("input vector(dim=5)", (5,)),
    "vector8": ("input vector(dim=8)", (8,)),
    "image3": ("input image(channels=3, height=2, width=3)", (3, 2, 3)),
    "image4": ("input image(channels=4, height=2, width=2)", (4, 2, 2)),
}


def compiled(inp: str, body: str):
    return flowdsl.compile(flowdsl.parse(f"flow s {{ {inp} {body} }}"), seed=0).double().eval()


@pytest.mark.parametrize("name", INPUTS)
def test_split_and_merge_follow_the_documented_channels(name):
    inp, shape = INPUTS[name]
    (layer,) = compiled(inp, "split").steps
    c = shape[0]
    keep = c - c // 2
    x = torch.randn(2, *shape, dtype=torch.float64)
    kept, latent = layer.split(x)
    assert torch.equal(kept, x[:, :keep]) and torch.equal(latent, x[:, keep:])
    assert torch.equal(layer.merge(x[:, :keep], x[:, keep:]), x)


@pytest.mark.parametrize("name", INPUTS)
def test_latent_scales_mark_the_factored_out_half(name):
    inp, shape = INPUTS[name]
    c = shape[0]
    keep = c - c // 2
    want = torch.ones(shape, dtype=torch.long)
    want[keep:] = 0
    assert torch.equal(compiled(inp, "split").latent_scales(), want)
    # two splits: the first emits the last ⌊C/2⌋, the second the last ⌊keep/2⌋ of the kept ones
    if keep >= 2:
        keep2 = keep - keep // 2
        want2 = torch.full(shape, 2, dtype=torch.long)
        want2[keep2:keep] = 1
        want2[keep:] = 0
        assert torch.equal(compiled(inp, "split split").latent_scales(), want2)


def test_latents_keep_their_place_in_z():
    """z of ``split coupling``: the factored-out entries are x's own (untouched by the coupling)."""
    model = compiled("input vector(dim=6)", "split coupling(hidden=8)")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(4, 6, dtype=torch.float64)
    z, _ = model(x)
    assert torch.equal(z[:, 3:], x[:, 3:])
    assert not torch.allclose(z[:, :3], x[:, :3])
