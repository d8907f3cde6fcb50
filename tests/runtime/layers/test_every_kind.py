"""Every registered layer kind, in float64 with randomised parameters: inverse round trip and
log-det against the autograd Jacobian (≤ 1e-10 relative), and its frozen (fused) form agreeing.

The examples are spec snippets, so each goes through the whole pipeline. A kind that registers
without an example here fails ``test_every_kind_has_an_example`` by name.
"""

from __future__ import annotations

import pytest
import torch
from flowtest import check_invertible, compiled

from flowdsl.compiler.kinds import layer_kinds

IMG = "input image(channels={c}, height={h}, width={w})"
VEC = "input vector(dim={d})"

EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "actnorm": [(IMG.format(c=2, h=3, w=4), "actnorm"), (VEC.format(d=5), "actnorm")],
    "conv1x1": [
        (IMG.format(c=3, h=3, w=3), "conv1x1(param=lu)"),
        (IMG.format(c=4, h=2, w=3), "conv1x1(param=qr)"),
        (IMG.format(c=3, h=2, w=2), "conv1x1(param=plain)"),
        (VEC.format(d=6), "conv1x1(param=qr)"),
        (VEC.format(d=5), "conv1x1"),
    ],
    "coupling": [
        (IMG.format(c=4, h=4, w=4), "coupling(kind=affine, hidden=8)"),
        (IMG.format(c=3, h=4, w=4), "coupling(kind=additive, hidden=8, net=resnet, depth=1)"),
        (IMG.format(c=2, h=3, w=3), "coupling(kind=affine, hidden=8, net=mlp, depth=2)"),
        (IMG.format(c=1, h=4, w=4), "coupling(kind=affine, mask=checkerboard, hidden=8)"),
        (IMG.format(c=2, h=3, w=4), "coupling(kind=affine, mask=checkerboard, net=mlp, hidden=16)"),
        (IMG.format(c=1, h=4, w=4), "coupling(kind=additive, mask=checkerboard, net=resnet, hidden=8, depth=2)"),
        (VEC.format(d=5), "coupling(hidden=16)"),
        (VEC.format(d=4), "coupling(kind=additive, hidden=16, depth=3)"),
        (VEC.format(d=5), "coupling(mask=checkerboard, hidden=16)"),
        (IMG.format(c=4, h=3, w=3), "coupling(kind=spline, hidden=8)"),
        (IMG.format(c=3, h=4, w=4), "coupling(kind=spline, bins=4, bound=2.0, net=resnet, depth=1, hidden=8)"),
        (IMG.format(c=2, h=3, w=3), "coupling(kind=spline, bins=3, net=mlp, hidden=8)"),
        (IMG.format(c=1, h=4, w=4), "coupling(kind=spline, mask=checkerboard, bins=5, bound=1.5, hidden=8)"),
        (VEC.format(d=5), "coupling(kind=spline, hidden=16)"),
        (VEC.format(d=4), "coupling(kind=spline, mask=checkerboard, bins=2, bound=0.5, hidden=16)"),
    ],
    "autoregressive": [
        (VEC.format(d=5), "autoregressive(hidden=16)"),
        (VEC.format(d=4), "autoregressive(direction=inverse, order=reverse, hidden=8, depth=3)"),
        (VEC.format(d=5), "autoregressive(kind=spline, order=random, seed=4, hidden=16)"),
        (VEC.format(d=3), "autoregressive(kind=spline, bins=3, bound=1.5, direction=inverse, hidden=8)"),
    ],
    "permute": [
        (IMG.format(c=5, h=2, w=2), "permute"),
        (IMG.format(c=5, h=2, w=2), "permute(kind=shuffle, seed=3)"),
        (VEC.format(d=7), "permute(kind=shuffle)"),
    ],
    "logit": [
        (IMG.format(c=2, h=3, w=3), "logit"),
        (VEC.format(d=5), "logit(alpha=0.0)"),
        (VEC.format(d=4), "logit(alpha=0.45)"),
    ],
    "squeeze": [(IMG.format(c=2, h=4, w=6), "squeeze"), (IMG.format(c=1, h=6, w=3), "squeeze(factor=3)")],
    "split": [(IMG.format(c=3, h=2, w=3), "split"), (VEC.format(d=5), "split")],
    "conv": [
        (IMG.format(c=2, h=5, w=5), "conv(kind=emerging, kernel=3)"),
        (IMG.format(c=3, h=4, w=6), "conv(kind=emerging, kernel=5)"),
        (IMG.format(c=2, h=4, w=5), "conv(kind=periodic, kernel=3)"),
        (IMG.format(c=2, h=5, w=4), "conv(kind=periodic, kernel=3)"),
    ],
    "butterfly": [
        (IMG.format(c=2, h=4, w=4), "butterfly"),
        (IMG.format(c=4, h=2, w=3), "butterfly(over=channels)"),
        (IMG.format(c=2, h=3, w=8), "butterfly(over=width, depth=2)"),
        (IMG.format(c=2, h=4, w=3), "butterfly(over=height)"),
        (VEC.format(d=8), "butterfly(depth=3)"),
    ],
    "rg": [
        (
            IMG.format(c=1, h=8, w=8),
            "rg(kernel=4) { disentangler { coupling(net=mlp, mask=checkerboard, hidden=8) } "
            "decimator { actnorm coupling(net=mlp, mask=checkerboard, hidden=8) } }",
        ),
        (
            IMG.format(c=2, h=4, w=4),
            "rg(kernel=2) { disentangler { coupling(net=mlp, mask=checkerboard, hidden=8) } "
            "decimator { coupling(net=mlp, mask=checkerboard, hidden=8) } }",
        ),
    ],
}

# kinds whose domain is [0, 1] (``logit``): the example inputs in [−0.5, 1.5) are mapped onto [0, 1)
UNIT_DOMAIN = {"logit"}

CASES = [(kind, inp, layer) for kind, exs in EXAMPLES.items() for inp, layer in exs]


def spec_text(inp: str, layer: str) -> str:
    return f"flow t {{\n  {inp}\n  {layer}\n}}\n"


def test_every_kind_has_an_example():
    missing = sorted(set(layer_kinds()) - set(EXAMPLES))
    assert not missing, f"layer kinds without an example in tests/runtime/layers/test_every_kind.py: {missing}"


@pytest.mark.parametrize(
    "kind,inp,layer", CASES, ids=[f"{k}:{layer[:48]}@{i.split('(')[1][:-1]}" for k, i, layer in CASES]
)
def test_kind_roundtrip_and_jacobian_logdet(kind, inp, layer):
    model, x = compiled(spec_text(inp, layer))
    if kind in UNIT_DOMAIN:
        x = (x + 0.5) / 2
    check_invertible(model, x, tol=1e-10)
    fused = model.fuse()
    with torch.no_grad():
        z, ld = model(x)
        zf, ldf = fused(x)
        assert torch.allclose(zf, z, rtol=1e-12, atol=1e-12)
        assert torch.allclose(ldf, ld, rtol=1e-12, atol=1e-10)
        assert torch.allclose(fused.inverse(z), x, rtol=1e-12, atol=1e-11)
