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


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_compiles_roundtrips_and_exports(path, tmp_path):
    spec = flowdsl.load(path)
    assert spec.filename == str(path)
    model, x = compiled(spec.source, batch=3)
    n = math.prod(model.input_shape)
    if n <= 256:  # dense Jacobian: small inputs only (every kind is checked on small shapes too)
        check_invertible(model, x, tol=1e-8, samples=1)
    else:
        with torch.no_grad():
            z, _ = model(x)
            assert float((model.inverse(z) - x).abs().max()) < 1e-8
    fwd, inv = flowdsl.export_onnx(model.float(), tmp_path)
    res = check_parity(model.fuse(), fwd, inv, batch=5)
    for key in ("z_rel", "logdet_rel", "log_prob_rel", "inverse_rel", "inverse_log_prob_rel"):
        assert res[key] <= 1e-4, (key, res)
