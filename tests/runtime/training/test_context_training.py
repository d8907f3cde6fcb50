"""Training, evaluation and sampling feed each example's context (the loop, not the layers).

A stand-in conditional model checks the pairing itself: the data put each example's class in
x[:, 0] (class + noise of std 0.05), and every ``forward`` / ``log_prob`` call raises unless
``round(x[:, 0])`` equals the context it is given, row for row; its ``sample`` writes the context
it got into x[:, 0]. So a run that finishes has fed every batch (initialisation, training,
validation, test, the final report, the samples) with the contexts of its own examples, and the
sample files show which context each sample was drawn with. The spec is a real parsed spec with a
``context label(classes=4)`` declaration added (the stand-in factory), so these tests do not need
the compiler's conditional layers; ``test_conditional_specs.py`` trains the real ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from flowdsl.errors import ContextError
from flowdsl.runtime.training.models import ModelFactory

K = 4
SPEC = """
flow paired {
    input vector(dim=2)
    actnorm
    prior gaussian
    train(batch=32, lr=0.3, steps=6, seed=0, warmup=1, eval_every=3)
}
"""


class Paired(nn.Module):
    """A class-conditional diagonal Gaussian that refuses contexts not paired with their rows."""

    def __init__(self, classes: int = K) -> None:
        super().__init__()
        self.input_shape = (2,)
        self.prior = None
        self.mu = nn.Parameter(torch.zeros(classes, 2))
        self.log_s = nn.Parameter(torch.zeros(classes, 2))
        self.calls = 0

    def _check(self, x: torch.Tensor, context) -> None:
        if context is None:
            raise ContextError("the stand-in needs a context")
        if not torch.equal(torch.round(x[:, 0]).long(), context):
            raise AssertionError("rows and contexts are not paired")
        self.calls += 1

    def forward(self, x, context=None):
        self._check(x, context)
        z = (x - self.mu[context]) * torch.exp(-self.log_s[context])
        return z, -self.log_s[context].sum(1)

    def log_prob(self, x, context=None):
        z, ld = self(x, context)
        return -0.5 * (z**2).sum(1) - math.log(2 * math.pi) + ld

    def sample(self, n, temperature=1.0, *, context=None, return_log_prob=False):
        if context is None or len(context) != n:
            raise ContextError("the stand-in samples with one context per sample")
        noise = torch.randn(n) * temperature
        return torch.stack([context.to(torch.float32), noise], 1)


class Factory(ModelFactory):
    """Parses the real spec and adds ``context label(classes=K)``; builds the stand-in."""

    def parse(self, text, filename="<string>"):
        import flowdsl

        return _with_context(flowdsl.parse(text, filename=filename))

    def load(self, path):
        import flowdsl

        return _with_context(flowdsl.load(path))

    def build(self, spec, seed):
        torch.manual_seed(seed)
        return Paired()


class _Spec:
    def __init__(self, spec):
        self._spec = spec
        self.context = SimpleNamespace(kind="label", classes=K, shape=())

    def __getattr__(self, name):
        return getattr(self._spec, name)


def _with_context(spec):
    return spec if isinstance(spec, _Spec) else _Spec(spec)


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory) -> tuple[Path, Path]:
    """A 6-step run of the stand-in on paired data; returns (run folder, data file)."""
    from flowdsl.runtime.training import train

    d = tmp_path_factory.mktemp("paired")
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, 600)
    np.savez(d / "paired.npz", x=np.column_stack([y + 0.05 * rng.standard_normal(600), rng.normal(size=600)]), y=y)
    spec = Factory().parse(SPEC)
    s = train(spec, data=str(d / "paired.npz"), out=d / "run", factory=Factory(), quiet=True, sample_n=8, val_max=64)
    assert s["step"] == 6 and s["context"] == f"context label(classes={K})"
    assert math.isfinite(s["test_bpd"]) and math.isfinite(s["best_val_bpd"])
    return d / "run", d / "paired.npz"


def test_a_run_feeds_every_example_its_own_context_and_resumes(paired_run, tmp_path):
    from flowdsl.runtime.training import train

    run, data = paired_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["context"] == "context label(classes=4)"
    assert (run / "samples.png").is_file()
    # the stand-in's class means moved towards their classes (class 0 stays near 0)
    from flowdsl.runtime.training.models import load_model

    _, model, _ = load_model(run, factory=Factory())
    assert torch.all(model.mu[1:, 0] > 0.5) and abs(float(model.mu[0, 0].detach())) < 0.3
    # resume continues with contexts (the same pairing check runs on every batch)
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    s = train(copy, resume=True, steps=8, factory=Factory(), quiet=True, sample_n=0)
    assert s["step"] == 8


def test_eval_scores_conditional_nll(paired_run, capsys):
    from flowdsl.runtime.training.eval_cli import evaluate_run
    from flowdsl.runtime.training.models import load_model

    run, data = paired_run
    res = evaluate_run(run, data=str(data), factory=Factory())
    assert res["context"] == "context label(classes=4)" and res["n"] == 60
    # independent: the stand-in's density written out, at the test rows and their labels
    _, model, _ = load_model(run, factory=Factory())
    z = np.load(data)
    from flowdsl.runtime.data.base import fixed_split

    _, te = fixed_split(600, test_fraction=0.1, seed=0)
    x, y = torch.from_numpy(z["x"][te]).float(), torch.from_numpy(z["y"][te])
    mu, s = model.mu.detach()[y], model.log_s.detach()[y].exp()
    ref = -torch.distributions.Normal(mu, s).log_prob(x).sum(1).mean()
    assert abs(res["nll_nats"] - float(ref)) < 1e-4


def _sample(run, *args):
    from flowdsl.cli import main

    try:
        return main(["sample", str(run), *args])
    except SystemExit as e:
        return int(e.code)


@pytest.fixture
def standin_factory(monkeypatch):
    for name in ("parse", "load", "build"):
        monkeypatch.setattr(ModelFactory, name, getattr(Factory, name))


def test_sample_context_flags(paired_run, tmp_path, capsys, standin_factory):
    run, _ = paired_run
    out = tmp_path / "s.npz"
    assert _sample(run, "--context", "2", "--n", "5", "-o", str(out)) == 0
    z = np.load(out)
    assert z["x"].shape == (5, 2) and np.all(z["x"][:, 0] == 2) and np.all(z["context"] == 2)
    assert z["log_prob"].shape == (5,)
    # default: one row per class, n rounded up to fill the rows
    assert _sample(run, "--n", "7", "-o", str(out)) == 0
    z = np.load(out)
    np.testing.assert_array_equal(z["x"][:, 0], np.repeat(np.arange(K), 2))
    np.testing.assert_array_equal(z["context"], np.repeat(np.arange(K), 2))
    cf = tmp_path / "c.npy"
    np.save(cf, np.array([3, 0, 3]))
    assert _sample(run, "--context-file", str(cf), "--n", "6", "-o", str(out)) == 0
    np.testing.assert_array_equal(np.load(out)["x"][:, 0], [3, 3, 0, 0, 3, 3])
    assert _sample(run, "--n", "8", "-o", str(tmp_path / "grid.png")) == 0
    capsys.readouterr()
    for args, msg in (
        (("--context", "4"), "outside 0..3"),
        (("--context", "two"), "not a class"),
        (("--context", "1", "--context-file", str(cf)), "not both"),
        (("--context-file", str(tmp_path / "missing.npy")), "no such context file"),
    ):
        assert _sample(run, *args, "-o", str(out)) == 1, args
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
    np.save(cf, np.array([[0.5, 1.0]]))
    assert _sample(run, "--context-file", str(cf), "-o", str(out)) == 1
    assert "context label(classes=4)" in capsys.readouterr().err
    np.save(cf, np.array([1, 9]))
    assert _sample(run, "--context-file", str(cf), "-o", str(out)) == 1
    assert "outside 0..3" in capsys.readouterr().err


def test_context_flags_on_an_unconditional_run_exit_1(tiny_runs, tmp_path, capsys):
    assert _sample(tiny_runs["moons"], "--context", "1", "-o", str(tmp_path / "s.npy")) == 1
    err = capsys.readouterr().err
    assert "unconditional" in err and "Traceback" not in err


def test_vector_contexts_parse_and_check():
    from flowdsl.errors import DataError
    from flowdsl.runtime.data.context import ContextDecl
    from flowdsl.runtime.training.sample_context import parse_context_value

    decl = ContextDecl("vector", None, (3,))
    torch.testing.assert_close(parse_context_value("0.5,-1,2e-1", decl), torch.tensor([0.5, -1.0, 0.2]))
    for bad in ("1,2", "a,b,c", "1,2,inf"):
        with pytest.raises(DataError, match=r"context vector\(dim=3\)"):
            parse_context_value(bad, decl)
    with pytest.raises(DataError, match="--context-file"):
        parse_context_value("1", ContextDecl("image", None, (1, 4, 4)))
