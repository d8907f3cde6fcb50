"""``export_onnx(check=True)``: one fusion for export and parity, NaN errors fail, the result unpacks as two paths."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

import flowdsl
from flowdsl.runtime.model import FlowModel

SPEC = """
flow v {
    input image(channels=2, height=4, width=4)
    actnorm conv1x1 coupling(hidden=8) squeeze split conv1x1(param=qr)
}
"""


def count_fuse(monkeypatch) -> list[int]:
    calls = [0]
    fuse = FlowModel.fuse

    def counting(self, *args, **kw):
        calls[0] += 1
        return fuse(self, *args, **kw)

    monkeypatch.setattr(FlowModel, "fuse", counting)
    return calls


def test_checked_export_fuses_once_and_returns_the_parity(monkeypatch, tmp_path):
    model = flowdsl.compile(flowdsl.parse(SPEC))
    calls = count_fuse(monkeypatch)
    res = flowdsl.export_onnx(model, tmp_path, check=True)
    assert calls[0] == 1
    forward_path, inverse_path = res  # still a pair of paths
    assert (
        (forward_path, inverse_path)
        == (res.forward, res.inverse)
        == (str(tmp_path / "forward.onnx"), str(tmp_path / "inverse.onnx"))
    )
    names = ("z", "logdet", "log_prob", "inverse", "inverse_log_prob")
    assert res.parity is not None and max(res.parity[f"{k}_rel"] for k in names) < 1e-4
    again = pickle.loads(pickle.dumps(res))
    assert again == res and again.parity == res.parity
    fused = model.fuse()
    calls[0] = 0
    assert flowdsl.export_onnx(fused, tmp_path / "f").parity is None and calls[0] == 0  # a fused model: used as it is


def test_nan_parity_fails_the_export(tmp_path):
    model = flowdsl.compile(flowdsl.parse(SPEC))
    with torch.no_grad():
        model.steps[0].bias[0] = float("nan")  # PyTorch and onnxruntime both give NaN: |a - b| is NaN
    with pytest.raises(flowdsl.FlowDSLError, match=r"onnxruntime disagrees with PyTorch.*z nan"):
        flowdsl.export_onnx(model, tmp_path, check=True)
    assert (tmp_path / "forward.onnx").exists()  # the files stay written
    flowdsl.export_onnx(model, tmp_path / "unchecked")  # without check: no parity, no error


def test_parity_failures_keeps_nan_and_errors_above_the_tolerance():
    from flowdsl.runtime.export.onnx import parity_failures

    parity = {"z_rel": 1e-6, "logdet_rel": math.nan, "log_prob_rel": 2e-4, "inverse_rel": 1e-4}
    parity["inverse_log_prob_rel"] = 3e-4
    assert max(0.0, math.nan) == 0.0  # why max() cannot be used: it drops a NaN that comes second
    bad = parity_failures(parity, 1e-4)
    assert list(bad) == ["logdet", "log_prob", "inverse_log_prob"] and math.isnan(bad["logdet"])
