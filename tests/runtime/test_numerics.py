"""Numerical guards and file-safety of exports."""

from __future__ import annotations

import warnings

import pytest
import torch

import flowdsl
from flowdsl.errors import FlowDSLError, NumericalWarning

SPEC = """
flow g {
    input image(channels=2, height=4, width=4)
    actnorm
    conv1x1(param=plain)
    coupling(hidden=8)
}
"""


def test_find_nonfinite_names_the_layer_and_line():
    m = flowdsl.compile(flowdsl.parse(SPEC)).eval()
    x = torch.rand(3, 2, 4, 4)
    assert m.find_nonfinite(x) is None
    with torch.no_grad():
        m.steps[2].nets[0][0].weight[0, 0, 0, 0] = float("nan")
    msg = m.find_nonfinite(x)
    assert msg is not None and "coupling0" in msg and "line 6" in msg


def test_near_singular_linear_map_warns_with_its_line():
    m = flowdsl.compile(flowdsl.parse(SPEC))
    with torch.no_grad():
        w = m.steps[1].weight
        w.copy_(torch.eye(2))
        w[1, 1] = 1e-9
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m.steps[1].frozen()
    msgs = [str(c.message) for c in caught if issubclass(c.category, NumericalWarning)]
    assert msgs and "conv1x10" in msgs[0] and "line 5" in msgs[0]


def test_export_to_unwritable_place_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    m = flowdsl.compile(flowdsl.parse(SPEC))
    with pytest.raises(FlowDSLError, match="cannot create the output directory"):
        flowdsl.export_onnx(m, blocker / "sub")


def test_export_leaves_no_partial_files(tmp_path):
    m = flowdsl.compile(flowdsl.parse(SPEC))
    flowdsl.export_onnx(m, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "export.json",
        "forward.onnx",
        "inverse.onnx",
        "prior.onnx",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left beside it
