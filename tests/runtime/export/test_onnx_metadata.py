"""ONNX files: checker-valid, dynamic batch, spec text and hash in the metadata."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

import flowdsl

SPEC = """
flow v {
    input image(channels=2, height=4, width=4)
    actnorm conv1x1 coupling(hidden=8) squeeze split conv1x1(param=qr)
}
"""


def test_metadata_and_dynamic_batch(tmp_path):
    spec = flowdsl.parse(SPEC)
    model = flowdsl.compile(spec)
    fwd, inv = flowdsl.export_onnx(model, tmp_path)
    for path, direction in ((fwd, "forward"), (inv, "inverse")):
        m = onnx.load(path)
        onnx.checker.check_model(m)
        meta = {p.key: p.value for p in m.metadata_props}
        assert meta["flowdsl.spec"] == SPEC and meta["flowdsl.spec_sha256"] == spec.sha256
        assert meta["flowdsl.direction"] == direction
        assert m.opset_import[0].version >= 18
    names = [o.name for o in onnx.load(fwd).graph.output]
    assert names == ["z", "logdet", "log_prob"]
    sess = ort.InferenceSession(fwd, providers=["CPUExecutionProvider"])
    for b in (1, 9):
        x = np.random.rand(b, 2, 4, 4).astype(np.float32)
        z, ld, lp = sess.run(None, {"x": x})
        with torch.no_grad():
            tz, tld = model.fuse()(torch.from_numpy(x))
        assert z.shape == (b, 2, 4, 4) and ld.shape == (b,) and lp.shape == (b,)
        assert np.abs(z - tz.numpy()).max() < 1e-4


def test_dynamo_exporter_also_works(tmp_path):
    model = flowdsl.compile(flowdsl.parse(SPEC))
    fwd, inv = flowdsl.export_onnx(model, tmp_path, check=True, exporter="dynamo")
    onnx.checker.check_model(onnx.load(inv))
