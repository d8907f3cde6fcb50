"""Fixtures of the training tests: two tiny trained runs (a vector and an image flow), trained
once per session and only read by the tests that use them (sample, eval)."""

from __future__ import annotations

from pathlib import Path

import pytest

MOONS = """
flow tiny_moons {
    input vector(dim=2)
    repeat 2 { actnorm coupling(kind=affine, net=mlp, hidden=8, depth=1) permute(kind=reverse) }
    prior gaussian(learned=true)
    train(data=moons, batch=32, lr=3e-3, steps=2, seed=1, warmup=1, eval_every=2)
}
"""

IMAGE = """
flow tiny_digits {
    input image(channels=1, height=8, width=8, levels=17)
    dequantize uniform
    squeeze(factor=2)
    actnorm conv1x1 coupling(hidden=4, net=conv, depth=1)
    prior gaussian
    train(data=digits, batch=16, lr=2e-3, steps=2, seed=0, warmup=1, eval_every=2)
}
"""



@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """``{"moons": RUN, "digits": RUN}``: run folders of 2 training steps each."""
    from flowdsl.runtime.training import train

    d = tmp_path_factory.mktemp("tiny_runs")
    out = {}
    for name, text in (("moons", MOONS), ("digits", IMAGE)):
        spec = d / f"{name}.flow"
        spec.write_text(text, encoding="utf-8")
        train(spec, out=d / name, steps=2, eval_every=2, sample_n=0, val_max=32, quiet=True)
        out[name] = d / name
    return out
