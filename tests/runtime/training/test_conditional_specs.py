"""Real conditional specs through train, eval and sample: a label context (digits), a vector
context (the conditional toy) and an image context derived with ``+lowres`` (a tiny cINN).

References are independent of the code under test: bits/dim recomputed from ``model.log_prob``
with the labels straight from scikit-learn's split, sample log-densities from a separate forward
pass, contexts from the data files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flowdsl.cli import main

LABEL = """
flow tiny_cglow {
    input image(channels=1, height=8, width=8, levels=17)
    context label(classes=10)
    dequantize uniform
    squeeze(factor=2)
    actnorm conv1x1 coupling(hidden=4, net=conv, depth=1)
    prior gaussian(learned=true, conditional=true)
    train(data=digits, batch=16, lr=2e-3, steps=2, seed=0, warmup=1, eval_every=2)
}
"""

VECTOR = """
flow tiny_crot {
    input vector(dim=2)
    context vector(dim=1)
    repeat 2 { actnorm coupling(kind=affine, net=mlp, hidden=8, depth=1) permute(kind=reverse) }
    prior gaussian(learned=true, conditional=true)
    train(data=rotated_gaussian, batch=32, lr=3e-3, steps=2, seed=1, warmup=1, eval_every=2)
}
"""

IMAGE = """
flow tiny_cinn {
    input image(channels=1, height=8, width=8, levels=17)
    context image(channels=1, height=4, width=4)
    dequantize uniform
    squeeze(factor=2)
    actnorm conv1x1 coupling(hidden=4, net=conv, depth=1)
    prior gaussian(learned=true, conditional=true)
    train(data="digits+lowres", batch=16, lr=2e-3, steps=2, seed=0, warmup=1, eval_every=2)
}
"""


@pytest.fixture(scope="module")
def cruns(tmp_path_factory) -> dict[str, Path]:
    from flowdsl.runtime.training import train

    d = tmp_path_factory.mktemp("cruns")
    out = {}
    for name, text in (("label", LABEL), ("vector", VECTOR), ("image", IMAGE)):
        spec = d / f"{name}.flow"
        spec.write_text(text, encoding="utf-8")
        s = train(
            spec, out=d / name, steps=2, eval_every=2, sample_n=4 if name == "image" else 0, val_max=32, quiet=True
        )
        assert s["context"] is not None and math.isfinite(s["test_bpd"])
        out[name] = d / name
    return out


def _run(*argv: str) -> int:
    try:
        return main(list(argv))
    except SystemExit as e:
        return int(e.code)


def test_label_run_reports_conditional_bits_per_dim(cruns, capsys, tmp_path):
    from flowdsl.runtime.data.digits import digits_arrays
    from flowdsl.runtime.training.models import load_model

    run = cruns["label"]
    assert json.loads((run / "summary.json").read_text())["context"] == "context label(classes=10)"
    res = tmp_path / "r.json"
    assert _run("eval", str(run), "--batch", "1000", "--json", str(res)) == 0
    assert "conditional bits/dim" in capsys.readouterr().out
    got = json.loads(res.read_text())["bits_per_dim"]
    _, model, _ = load_model(run)
    k, y = digits_arrays("test")  # labels from scikit-learn's targets, independently of the loader
    k = torch.from_numpy(k).float()
    x = (k + torch.rand(k.shape, generator=torch.Generator().manual_seed(0))) / 17
    with torch.no_grad():
        lp = model.log_prob(x, context=torch.from_numpy(y)).double()
    ref = (-lp.mean() / 64 + math.log(17)) / math.log(2)
    assert abs(got - float(ref)) < 1e-5


def test_label_samples_by_class(cruns, tmp_path, capsys):
    from flowdsl.runtime.training.models import load_model

    run, out = cruns["label"], tmp_path / "s.npz"
    assert _run("sample", str(run), "--context", "3", "--n", "4", "-o", str(out)) == 0
    z = np.load(out)
    assert z["x"].shape == (4, 1, 8, 8) and np.all(z["context"] == 3)
    _, model, _ = load_model(run)
    with torch.no_grad():  # an independent forward pass at the samples, with their class
        lp = model.log_prob(torch.from_numpy(z["x"]), context=torch.full((4,), 3)).numpy()
    np.testing.assert_allclose(z["log_prob"], lp, rtol=1e-4, atol=1e-3)
    assert _run("sample", str(run), "--n", "20", "-o", str(out)) == 0  # default: one row per class
    np.testing.assert_array_equal(np.load(out)["context"], np.repeat(np.arange(10), 2))
    assert _run("sample", str(run), "--n", "20", "-o", str(tmp_path / "grid.png")) == 0
    capsys.readouterr()
    assert _run("sample", str(run), "--context", "10", "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert "outside 0..9" in err and "context label(classes=10)" in err and "Traceback" not in err


def test_vector_run_samples_with_a_given_context(cruns, tmp_path, capsys):
    run, out = cruns["vector"], tmp_path / "v.npz"
    assert _run("sample", str(run), "--context", "0.5", "--n", "6", "-o", str(out)) == 0
    z = np.load(out)
    assert z["x"].shape == (6, 2) and np.all(z["context"] == np.float32(0.5))
    assert _run("sample", str(run), "--context", "0.5,1", "-o", str(out)) == 1
    assert "context vector(dim=1)" in capsys.readouterr().err
    assert _run("eval", str(run), "--eval-max", "100") == 0
    assert "conditional NLL" in capsys.readouterr().out


def test_cinn_run_uses_the_lowres_context(cruns, tmp_path, capsys):
    from flowdsl.runtime.data.digits import digits_arrays

    run = cruns["image"]
    assert (run / "samples.png").is_file()
    k, _ = digits_arrays("test")
    low = (torch.nn.functional.avg_pool2d(torch.from_numpy(k[:2]).double(), 2) + 0.5) / 17
    cf = tmp_path / "low.npy"
    np.save(cf, low.float().numpy())
    out = tmp_path / "c.npz"
    assert _run("sample", str(run), "--context-file", str(cf), "--n", "6", "-o", str(out)) == 0
    z = np.load(out)
    assert z["x"].shape == (6, 1, 8, 8) and z["context"].shape == (6, 1, 4, 4)
    np.testing.assert_array_equal(z["context"][:3], np.repeat(low[:1].float().numpy(), 3, 0))
    np.save(cf, np.zeros((2, 1, 8, 8), np.float32))
    assert _run("sample", str(run), "--context-file", str(cf), "-o", str(out)) == 1
    assert "context image(channels=1, height=4, width=4)" in capsys.readouterr().err


def test_invertible_memory_refuses_a_context(tmp_path):
    from flowdsl.errors import NotAvailableError
    from flowdsl.runtime.training import train

    with pytest.raises(NotAvailableError, match="does not take a context"):
        train(VECTOR, out=tmp_path / "r", invertible_memory=True, quiet=True)
    assert not (tmp_path / "r" / "last.pt").exists()
