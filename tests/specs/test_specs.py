"""Every spec in specs/ checks, compiles, round-trips in float64, and exports to ONNX with
onnxruntime parity ≤ 1e-4 (float32, every output of both files) at a batch size not used at export."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from flowtest import check_invertible, compiled

import flowdsl
from flowdsl.runtime.export.onnx import check_parity

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.flow"))


def test_there_are_specs():
    names = {p.name for p in SPECS}
    assert {"glow_digits.flow", "glow_cifar.flow", "realnvp_moons.flow"} <= names


def _check_conditional(model, x, tol: float = 1e-8) -> None:
    """Round trip and log-det vs the autograd Jacobian of a conditional model, each example with
    its own random context."""
    from flowdsl.runtime.training.demo import random_context

    c = random_context(model, len(x))
    shape = tuple(model.input_shape)
    n = math.prod(shape)
    with torch.no_grad():
        z, logdet = model(x, context=c)
        assert float((model.inverse(z, context=c) - x).abs().max()) <= tol
    if n <= 256:
        jac = torch.autograd.functional.jacobian(
            lambda v: model(v.reshape(1, *shape), context=c[:1])[0].reshape(-1), x[0].reshape(-1)
        )
        ref = torch.linalg.slogdet(jac.reshape(n, n))[1]
        assert float((logdet[0] - ref).abs() / ref.abs().clamp_min(1.0)) <= tol


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_compiles_roundtrips_and_exports(path, tmp_path):
    spec = flowdsl.load(path)
    assert spec.filename == str(path)
    if spec.context is not None:  # conditional: the data-dependent init needs contexts too
        from flowdsl.runtime.training.demo import random_context, randomize_parameters

        model = flowdsl.compile(spec).double()
        x = torch.rand(3, *model.input_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        model.train()
        with torch.no_grad():
            model(x, context=random_context(model, 3, seed=1))
        randomize_parameters(model)
        model.eval()
        _check_conditional(model, x)
    else:
        model, x = compiled(spec.source, batch=3)
    n = math.prod(model.input_shape)
    if spec.context is not None:
        pass
    elif n <= 256:  # dense Jacobian: small inputs only (every kind is checked on small shapes too)
        check_invertible(model, x, tol=1e-8, samples=1)
    else:
        with torch.no_grad():
            z, _ = model(x)
            assert float((model.inverse(z) - x).abs().max()) < 1e-8
    fwd, inv = flowdsl.export_onnx(model.float(), tmp_path)
    res = check_parity(model.fuse(), fwd, inv, batch=5)
    for key in ("z_rel", "logdet_rel", "log_prob_rel", "inverse_rel", "inverse_log_prob_rel"):
        assert res[key] <= 1e-4, (key, res)
