"""``flowdsl bench`` on a conditional spec: every variant (unfused, fused, onnxruntime) is timed
and checked on the same random contexts, and agrees with the unfused model's log-density."""

from __future__ import annotations

from flowdsl.runtime.bench.suite import bench_spec

SPEC = """flow tiny_conditional {
  input image(channels=2, height=4, width=4)
  context label(classes=3)
  actnorm
  conv1x1
  coupling(hidden=8)
  prior gaussian(conditional=true)
}
"""


def test_a_conditional_spec_is_benchmarked_with_its_context(tmp_path):
    path = tmp_path / "tiny_conditional.flow"
    path.write_text(SPEC, encoding="utf-8")
    res = bench_spec(
        str(path), batch=4, repeats=1, threads=1, compile_=False, onnx=True, normflows=True, say=lambda s: None
    )
    assert any("random label context" in note for note in res.notes)
    assert set(res.times["log_prob"]) == {"unfused eager", "fused eager", "onnxruntime"}
    assert set(res.times["sample"]) == {"unfused eager", "fused eager", "onnxruntime"}
    assert res.errors["fused eager"] < 1e-5
    assert res.errors["onnxruntime"] < 1e-4
