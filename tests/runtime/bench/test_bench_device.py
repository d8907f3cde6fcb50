"""``flowdsl bench --device``: validated, resolved before any work, and carried into every probe.

The probes themselves are replaced by recorders (a real probe is a fresh process timing a spec for
minutes); off the CPU only the fusion table is made, since the other sections measure the CPU.
CUDA itself is untested here: the "other device" below is torch's meta device.
"""

from __future__ import annotations

import pytest
import torch

import flowdsl.runtime.bench.suite as suite
import flowdsl.runtime.training.device as device
from flowdsl.cli import main as flowdsl_main

SPEC = "flow v {\n  input vector(dim=2)\n  actnorm\n  prior gaussian\n}\n"


@pytest.fixture
def spec_file(tmp_path):
    p = tmp_path / "v.flow"
    p.write_text(SPEC, encoding="utf-8")
    return p


@pytest.fixture
def recorded(monkeypatch):
    """run_spec_probe and matmul_peak record their arguments instead of measuring."""
    seen: dict = {"probes": [], "peaks": []}

    def probe(path, batch, repeats, threads, flags, warm):
        seen["probes"].append(dict(flags, warm=warm))
        raise RuntimeError("not measured in this test")

    def peak(threads, device="cpu"):
        seen["peaks"].append(device)
        return (1.0, 1.0)

    monkeypatch.setattr(suite, "run_spec_probe", probe)
    monkeypatch.setattr(suite, "matmul_peak", peak)
    return seen


def test_bad_device_is_a_usage_error(spec_file, capsys):
    with pytest.raises(SystemExit) as e:
        flowdsl_main(["bench", str(spec_file), "--device", "tpu"])
    assert e.value.code == 1 and "expected auto, cpu, cuda" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_a_user_error_before_any_probe(spec_file, recorded, capsys):
    assert flowdsl_main(["bench", str(spec_file), "--device", "cuda", "--no-memory"]) == 1
    assert "CUDA is not available" in capsys.readouterr().err and recorded["probes"] == []


def test_cpu_is_the_default_and_reaches_the_probes(spec_file, recorded, capsys):
    assert flowdsl_main(["bench", str(spec_file), "--sections", "fusion", "--no-memory"]) == 0
    assert [p["device"] for p in recorded["probes"]] == ["cpu"] and set(recorded["peaks"]) == {"cpu"}
    assert "device cpu" in capsys.readouterr().out


def test_another_device_reaches_the_probes_and_skips_the_cpu_sections(spec_file, recorded, monkeypatch, capsys):
    monkeypatch.setattr(device, "resolve_device", lambda text: torch.device("meta"))
    assert flowdsl_main(["bench", str(spec_file), "--device", "cuda", "--sections", "fusion,convs,rg"]) == 0
    out = capsys.readouterr().out
    assert [p["device"] for p in recorded["probes"]] == ["meta"] and set(recorded["peaks"]) == {"meta"}
    assert "device meta" in out and "the CPU sections convs, rg, memory were not run" in out
    assert "## Memory" not in out
