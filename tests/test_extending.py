"""Extending flowdsl at run time through its registries alone (no library file is edited):

* a layer kind: ``toy_scale(init=...)``, y = x·exp(s) with one learned log-factor s per entry
  (the factor exp(s) stays positive), log|det J| = Σ s; a compiler ``LayerKind`` registered with
  ``register_layer`` and a runtime module registered with ``@lowering``;
* a prior: ``toy_logistic(scale=...)``, a factorised logistic base (``PriorKind`` +
  ``@prior_lowering``);
* a data set: ``toy_ring``, noisy points on a circle (``@register_dataset``);
* an objective: ``toy_objective`` (``register_objective`` + ``@objective_runtime``) with a flag
  of its own, reached by ``flowdsl train``.

A spec using them parses, checks and compiles; in float64 it round-trips and its log-det matches
autograd; it trains a few steps on the toy data through :func:`flowdsl.runtime.training.train`
and samples through ``flowdsl sample``. Every registration is undone after its test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import Field
from torch import Tensor, nn

import flowdsl
from flowdsl.compiler.registry import (
    ArgsModel,
    LayerKind,
    ObjectiveKind,
    PriorKind,
    get_layer,
    register_layer,
    register_objective,
    register_prior,
    unregister_layer,
    unregister_objective,
    unregister_prior,
)
from flowdsl.errors import CheckError, FlowDSLError
from flowdsl.runtime.bijector import Bijector
from flowdsl.runtime.data import DataRequest, register_dataset, unregister_dataset
from flowdsl.runtime.data.base import as_dataset
from flowdsl.runtime.layers import lowering, unregister_lowering
from flowdsl.runtime.objectives import ObjectiveRuntime, objective_runtime, unregister_objective_runtime
from flowdsl.runtime.priors import prior_lowering, unregister_prior_lowering

SPEC = """flow extended {
    input vector(dim=2)
    toy_scale(init=0.5)
    coupling(hidden=16, depth=1)
    toy_scale
    prior toy_logistic(scale=1.5)
    train(data=toy_ring, batch=32, lr=1e-2, steps=6, seed=0, warmup=1, eval_every=3, checkpoint_every=3)
}
"""


# -- the layer kind ------------------------------------------------------------------------------
class ToyScaleKind(LayerKind):
    name = "toy_scale"
    description = "elementwise scale by a learned positive factor"

    class Args(ArgsModel):
        init: float = Field(default=1.0, gt=0)

    @classmethod
    def param_count(cls, args, shape) -> int:
        return math.prod(shape)


class ToyScale(Bijector):
    def __init__(self, shape: tuple[int, ...], init: float) -> None:
        super().__init__()
        self.log_factor = nn.Parameter(torch.full(shape, math.log(init)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.log_factor.to(x.dtype)
        return x * torch.exp(s), s.sum().reshape(1).expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.log_factor.to(y.dtype))


def lower_toy_scale(args, shape, bodies=None):
    return ToyScale(shape, args.init)


# -- the prior -----------------------------------------------------------------------------------
class ToyLogisticKind(PriorKind):
    name = "toy_logistic"

    class Args(ArgsModel):
        scale: float = Field(default=1.0, gt=0)


class ToyLogistic(nn.Module):
    """log p(z) = Σ −u − 2·softplus(−u) − log s with u = z/s; sampling z = T·s·logit(v), v ~ U(0, 1)."""

    def __init__(self, shape: tuple[int, ...], scale: float) -> None:
        super().__init__()
        self.shape, self.scale = tuple(shape), float(scale)

    def log_prob(self, z: Tensor) -> Tensor:
        u = z / self.scale
        lp = -u - 2 * nn.functional.softplus(-u) - math.log(self.scale)
        return lp.reshape(z.shape[0], -1).sum(1)

    def sample(self, n: int, temperature: float = 1.0, device=None, dtype=None) -> Tensor:
        v = torch.rand((n, *self.shape), device=device, dtype=dtype or torch.float32).clamp(1e-6, 1 - 1e-6)
        return temperature * self.scale * torch.logit(v)


def lower_toy_logistic(args, shape):
    return ToyLogistic(shape, args.scale)


# -- the data set --------------------------------------------------------------------------------
def load_toy_ring(req: DataRequest):
    n = req.n or (512 if req.split == "train" else 128)
    rng = np.random.Generator(np.random.PCG64(req.seed + (0 if req.split == "train" else 1_000_003)))
    angle = rng.uniform(0, 2 * np.pi, n)
    x = 2.0 * np.stack([np.cos(angle), np.sin(angle)], 1) + 0.1 * rng.standard_normal((n, 2))
    return as_dataset(req.name, x, input_shape=req.shape, levels=req.levels, data_levels=None, split=req.split)


@pytest.fixture
def extensions():
    """Register the toy layer kind, prior and data set; undo it afterwards."""
    register_layer(ToyScaleKind)
    lowering("toy_scale")(lower_toy_scale)
    register_prior(ToyLogisticKind)
    prior_lowering("toy_logistic")(lower_toy_logistic)
    register_dataset("toy_ring", kind="vector", description="noisy points on a circle of radius 2")(load_toy_ring)
    # registering the same definitions again is a no-op
    register_layer(ToyScaleKind)
    register_dataset("toy_ring", kind="vector", description="noisy points on a circle of radius 2")(load_toy_ring)
    try:
        yield
    finally:
        unregister_layer("toy_scale")
        unregister_lowering("toy_scale")
        unregister_prior("toy_logistic")
        unregister_prior_lowering("toy_logistic")
        unregister_dataset("toy_ring")


def _randomise(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_a_spec_of_run_time_kinds_checks_compiles_and_is_exact(extensions):
    spec = flowdsl.parse(SPEC)
    layers = [n for n in spec.graph.layers() if n.kind == "toy_scale"]
    assert len(layers) == 2 and [n.n_params for n in layers] == [2, 2]
    assert layers[0].args.init == 0.5 and layers[1].args.init == 1.0 and spec.prior.name == "toy_logistic"
    with pytest.raises(CheckError, match="init"):
        flowdsl.parse(SPEC.replace("init=0.5", "init=-1"))

    model = flowdsl.compile(spec, seed=0).double()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_params == spec.graph.total_params()
    _randomise(model)
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z, logdet = (t.detach() for t in model(x))
    assert float((model.inverse(z) - x).detach().abs().max()) < 1e-12
    for i in range(x.shape[0]):  # log|det J| of x -> z against the autograd Jacobian, per example
        jac = torch.autograd.functional.jacobian(lambda v: model(v.reshape(1, 2))[0].reshape(2), x[i])
        ref = torch.linalg.slogdet(jac)[1]
        assert abs(float(logdet[i] - ref)) <= 1e-10 * max(1.0, abs(float(ref)))
    u = z / 1.5
    prior = (-u - 2 * torch.nn.functional.softplus(-u) - math.log(1.5)).sum(1)
    assert torch.allclose(model.log_prob(x), prior + logdet, rtol=0, atol=1e-12)
    assert model.sample(7, temperature=0.5).shape == (7, 2)


def test_the_spec_trains_on_the_run_time_data_set_and_samples(extensions, tmp_path, capsys):
    from flowdsl.cli import main
    from flowdsl.runtime.training import train

    summary = train(SPEC, out=tmp_path / "run", quiet=True, sample_n=0)
    assert summary["step"] == 6 and math.isfinite(summary["test_bpd"]) and math.isfinite(summary["best_val_bpd"])
    png = tmp_path / "s.png"
    assert main(["sample", str(tmp_path / "run"), "--n", "16", "-o", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and "wrote 16 samples of extended" in capsys.readouterr().out


def test_registrations_are_undone():
    assert get_layer("toy_scale") is None
    with pytest.raises(CheckError, match="unknown layer or block 'toy_scale'"):
        flowdsl.parse(SPEC)


# -- an objective --------------------------------------------------------------------------------
class ToyObjectiveKind(ObjectiveKind):
    name = "toy_objective"

    class Args(ArgsModel):
        weight: float = 1.0


class ToyObjectiveRuntime(ObjectiveRuntime):
    summary = "records what it was asked"
    calls: list = []

    def train(self, spec, data=None, steps=None, out=None, resume=False, *, overwrite=False, quiet=False, **options):
        self.calls.append({"spec": spec.name, "weight": spec.objective.args.weight, "data": data, **options})
        return {"step": 0}

    def add_train_arguments(self, group) -> None:
        group.add_argument("--toy-note", default=None, help="a note for the toy objective")


@pytest.fixture
def toy_objective():
    register_objective(ToyObjectiveKind)
    objective_runtime("toy_objective")(ToyObjectiveRuntime)
    ToyObjectiveRuntime.calls.clear()
    try:
        yield ToyObjectiveRuntime.calls
    finally:
        unregister_objective("toy_objective")
        unregister_objective_runtime("toy_objective")


def test_flowdsl_train_dispatches_to_a_run_time_objective(toy_objective, tmp_path, capsys):
    from flowdsl.cli import main
    from flowdsl.runtime.training import train

    spec = tmp_path / "t.flow"
    spec.write_text("flow t {\n    input vector(dim=2)\n    actnorm\n    objective toy_objective(weight=2.5)\n}\n")
    assert main(["train", str(spec), "--data", "moons", "--toy-note", "hi", "--batch", "8"]) == 0
    assert toy_objective[-1]["weight"] == 2.5 and toy_objective[-1]["toy_note"] == "hi"
    assert toy_objective[-1]["batch"] == 8 and toy_objective[-1]["data"] == "moons"
    assert train(str(spec), lr=0.5) == {"step": 0} and toy_objective[-1]["lr"] == 0.5
    # its flag belongs to it: given for an mle spec, it is an error that says whose flag it is
    mle = tmp_path / "m.flow"
    mle.write_text("flow m {\n    input vector(dim=2)\n    actnorm\n}\n")
    assert main(["train", str(mle), "--toy-note", "hi", "--out", str(tmp_path / "m")]) == 1
    assert "--toy-note is a flag of objective toy_objective" in capsys.readouterr().err


def test_an_objective_without_a_runtime_is_a_located_error(toy_objective):
    from flowdsl.runtime.training import train

    unregister_objective_runtime("toy_objective")
    text = "flow t {\n    input vector(dim=2)\n    actnorm\n    objective toy_objective\n}\n"
    with pytest.raises(FlowDSLError) as e:
        train(text, steps=1)
    assert e.value.line == 4 and "no @objective_runtime('toy_objective')" in e.value.message
