"""Hypothesis: random valid specs of the Glow-family layers compile and are exact bijections.

The strategy tracks the shape while it draws layers, so every drawn spec is valid; specs use
blocks with parameters and nested repeats too.
"""

from __future__ import annotations

import math

from flowtest import check_invertible, compiled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdsl


@st.composite
def layer_list(draw, shape):
    shape = list(shape)
    image = len(shape) == 3
    out = []
    for _ in range(draw(st.integers(1, 6))):
        positions = shape[1] * shape[2] if image else shape[0]
        opts = ["actnorm", "conv1x1", "permute"]
        if shape[0] >= 2 or positions >= 2:
            opts.append("coupling")
        if image and shape[1] % 2 == 0 and shape[2] % 2 == 0 and shape[1] >= 2:
            opts.append("squeeze")
        if shape[0] >= 2:
            opts.append("split")
        kind = draw(st.sampled_from(opts))
        if kind == "actnorm":
            out.append("actnorm")
        elif kind == "conv1x1":
            out.append(f"conv1x1(param={draw(st.sampled_from(['lu', 'qr', 'plain']))})")
        elif kind == "permute":
            out.append(draw(st.sampled_from(["permute", "permute(kind=shuffle, seed=2)"])))
        elif kind == "coupling":
            masks = (["checkerboard"] if positions >= 2 else []) + (["channel"] if shape[0] >= 2 else [])
            nets = ["mlp"] + (["conv", "resnet"] if image else [])
            mask = draw(st.sampled_from(masks))
            net = draw(st.sampled_from(nets))
            ck = draw(st.sampled_from(["affine", "additive"]))
            out.append(
                f"coupling(kind={ck}, mask={mask}, net={net}, hidden={draw(st.sampled_from([4, 8]))}, "
                f"depth={draw(st.integers(1, 2))})"
            )
        elif kind == "squeeze":
            out.append("squeeze(factor=2)")
            shape = [shape[0] * 4, shape[1] // 2, shape[2] // 2]
        elif kind == "split":
            out.append("split")
            shape[0] = shape[0] - shape[0] // 2
    return out, tuple(shape)


@st.composite
def specs(draw):
    if draw(st.booleans()):
        c, h, w = draw(st.integers(1, 3)), draw(st.sampled_from([2, 4])), draw(st.sampled_from([2, 4, 6]))
        inp, shape = f"input image(channels={c}, height={h}, width={w}, levels=256)", (c, h, w)
    else:
        d = draw(st.integers(2, 9))
        inp, shape = f"input vector(dim={d})", (d,)
    first, shape = draw(layer_list(shape))
    # a parameterised block used inside a nested repeat (shape-preserving body)
    hidden = draw(st.sampled_from([4, 6]))
    positions = shape[1] * shape[2] if len(shape) == 3 else shape[0]
    mask = "channel" if shape[0] >= 2 else "checkerboard"
    block = f"block step(h=4, m={mask}) {{ actnorm coupling(hidden=$h, mask=$m, net=mlp) }}\n"
    inner = draw(st.integers(1, 2))
    outer = draw(st.integers(1, 2))
    if shape[0] >= 2 or positions >= 2:
        body = "\n    ".join(first + [f"repeat {outer} {{ repeat {inner} {{ step(h={hidden}) }} permute }}"])
    else:  # nothing left to couple: a parameterised block of element-wise layers instead
        block = "block step(h=4) { actnorm repeat $h { permute } }\n"
        body = "\n    ".join(first + [f"repeat {outer} {{ repeat {inner} {{ step(h={hidden}) }} }}"])
    prior = draw(st.sampled_from(["gaussian", "gaussian(learned=true)", "laplace", "laplace(scale=2.0, learned=true)"]))
    return f"{block}flow random {{\n    {inp}\n    {body}\n    prior {prior}\n}}\n", shape


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_random_valid_specs_compile_and_are_bijections(spec_and_shape):
    text, _ = spec_and_shape
    model, x = compiled(text, batch=3)
    samples = 1 if math.prod(model.input_shape) <= 64 else 0
    check_invertible(model, x, tol=1e-9, samples=samples)
    lp = model.log_prob(x)
    assert lp.shape == (3,)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_never_raises_anything_but_flowdsl_errors(text):
    try:
        flowdsl.parse(text)
    except flowdsl.FlowDSLError as e:
        # every error about the text is located on a real line and column of it
        assert 1 <= e.line <= text.count("\n") + 1, (e.line, str(e))
        assert e.column >= 1, (e.column, str(e))
        assert str(e).startswith(f"<string>:{e.line}:{e.column}: "), str(e)
