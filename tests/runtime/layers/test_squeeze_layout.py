"""``squeeze(factor=f)`` against an independent construction of its documented layout

    y[c·f² + a·f + b, i, j] = x[c, i·f + a, j·f + b]

built here by explicit index loops, for factors 2 and 3 and several channel counts; the
inverse must read the same map backwards. The layout is also visible through the public model:
after ``squeeze split`` the latents of scale 0 sit at the pixels whose squeezed channel falls
into the second half.
"""

from __future__ import annotations

import pytest
import torch

import flowdsl

CASES = [  # (channels, height, width, factor)
    (1, 4, 4, 2),
    (2, 4, 6, 2),
    (3, 6, 2, 2),
    (1, 6, 9, 3),
    (2, 3, 3, 3),
    (4, 9, 6, 3),
]
IDS = [f"c{c}_{h}x{w}_f{f}" for c, h, w, f in CASES]


def squeeze_layer(c: int, h: int, w: int, f: int):
    inp = f"input image(channels={c}, height={h}, width={w})"
    model = flowdsl.compile(flowdsl.parse(f"flow s {{ {inp} squeeze(factor={f}) }}"))
    (layer,) = model.steps
    return layer.double()


def reference(x: torch.Tensor, f: int) -> torch.Tensor:
    """y[n, c·f² + a·f + b, i, j] = x[n, c, i·f + a, j·f + b], one entry at a time."""
    n, c, h, w = x.shape
    y = torch.full((n, c * f * f, h // f, w // f), float("nan"), dtype=x.dtype)
    for k in range(n):
        for ch in range(c):
            for a in range(f):
                for b in range(f):
                    for i in range(h // f):
                        for j in range(w // f):
                            y[k, ch * f * f + a * f + b, i, j] = x[k, ch, i * f + a, j * f + b]
    return y


@pytest.mark.parametrize("c,h,w,f", CASES, ids=IDS)
def test_forward_is_the_documented_index_map(c, h, w, f):
    layer = squeeze_layer(c, h, w, f)
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    y, logdet = layer(x)
    want = reference(x, f)
    assert not torch.isnan(want).any()  # every output entry was assigned
    assert y.shape == want.shape and torch.equal(y, want)
    assert torch.equal(logdet, torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("c,h,w,f", CASES, ids=IDS)
def test_inverse_reads_the_map_backwards(c, h, w, f):
    layer = squeeze_layer(c, h, w, f)
    x = torch.randn(3, c, h, w, dtype=torch.float64)
    assert torch.equal(layer.inverse(reference(x, f)), x)


def test_named_entries_for_factor_two():
    """A hand-checked instance: x[0, 2i+a, 2j+b] = 10a + b + 100i + 1000j lands in channel 2a + b."""
    layer = squeeze_layer(1, 4, 4, 2)
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    for i in range(2):
        for j in range(2):
            for a in range(2):
                for b in range(2):
                    x[0, 0, 2 * i + a, 2 * j + b] = 10 * a + b + 100 * i + 1000 * j
    y, _ = layer(x)
    assert y[0, 1, 0, 0] == 1 and y[0, 2, 0, 0] == 10 and y[0, 3, 1, 0] == 111 and y[0, 2, 0, 1] == 1010


@pytest.mark.parametrize("c,h,w,f", CASES, ids=IDS)
def test_latent_scales_after_squeeze_split_follow_the_layout(c, h, w, f):
    """``squeeze split``: split keeps the first C·f² − ⌊C·f²/2⌋ channels; the rest are the
    scale-0 latents, scattered back to the pixels of x they came from."""
    model = flowdsl.compile(
        flowdsl.parse(f"flow s {{ input image(channels={c}, height={h}, width={w}) squeeze(factor={f}) split }}")
    )
    channels = c * f * f
    keep = channels - channels // 2
    want = torch.empty(c, h, w, dtype=torch.long)
    for ch in range(c):
        for r in range(h):
            for col in range(w):
                squeezed = ch * f * f + (r % f) * f + (col % f)
                want[ch, r, col] = 0 if squeezed >= keep else 1
    assert torch.equal(model.latent_scales(), want)
