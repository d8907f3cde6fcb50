"""The export folder is one unit: one export id in every file, a manifest, an atomic folder swap;
SIGKILL and SIGINT at several points never leave a mixed pair, and the next export cleans up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import flowdsl
from flowdsl.runtime.export import pair
from flowdsl.runtime.export.onnx import check_parity

SPEC = """
flow v {
    input vector(dim=3)
    repeat 2 { actnorm coupling(kind=affine, net=mlp, hidden=8, depth=1) permute(kind=reverse) }
    prior gaussian(learned=true)
}
"""


def _model(shift: float):
    model = flowdsl.compile(flowdsl.parse(SPEC), seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(shift)
    return model


def _roundtrip_error(folder: Path) -> float:
    import onnxruntime as ort

    fwd = ort.InferenceSession(str(folder / "forward.onnx"), providers=["CPUExecutionProvider"])
    inv = ort.InferenceSession(str(folder / "inverse.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    z = fwd.run(None, {"x": x})[0]
    return float(np.abs(inv.run(None, {"z": z})[0] - x).max())


def test_every_file_carries_one_export_id_and_the_manifest_lists_them(tmp_path):
    flowdsl.export_onnx(_model(0.0), tmp_path / "o", weights="untrained")
    m = pair.verify_export(tmp_path / "o")
    assert sorted(m["files"]) == ["forward.onnx", "inverse.onnx", "prior.onnx"] and m["weights"] == "untrained"
    ids = {pair.export_id_of(tmp_path / "o" / f) for f in m["files"]}
    assert ids == {m["export_id"]}
    first = m["export_id"]
    flowdsl.export_onnx(_model(0.1), tmp_path / "o")  # a second export replaces the whole folder
    assert pair.verify_export(tmp_path / "o")["export_id"] != first
    assert sorted(os.listdir(tmp_path)) == ["o"]


def test_a_mixed_pair_is_refused_by_the_parity_check_and_verify(tmp_path):
    a, b = _model(0.0), _model(0.3)
    flowdsl.export_onnx(a, tmp_path / "a")
    flowdsl.export_onnx(b, tmp_path / "b")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "forward.onnx").write_bytes((tmp_path / "b" / "forward.onnx").read_bytes())  # the state
    (mixed / "inverse.onnx").write_bytes((tmp_path / "a" / "inverse.onnx").read_bytes())
    assert _roundtrip_error(mixed) > 1e-2  # both carry the same spec hash, yet they do not invert each other
    with pytest.raises(flowdsl.FlowDSLError, match="different exports"):
        check_parity(b.fuse(), str(mixed / "forward.onnx"), str(mixed / "inverse.onnx"))
    (mixed / "export.json").write_bytes((tmp_path / "b" / "export.json").read_bytes())
    with pytest.raises(flowdsl.FlowDSLError, match="missing or was changed"):
        pair.verify_export(mixed)


def test_a_folder_with_other_files_is_not_swapped_away(tmp_path, monkeypatch):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    with pytest.raises(flowdsl.FlowDSLError, match=r"holds other files \(notes.txt\)"):
        flowdsl.export_onnx(_model(0.0), d)
    assert (d / "notes.txt").read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["mine"]
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(flowdsl.FlowDSLError, match="must be a folder"):
        flowdsl.export_onnx(_model(0.0), f)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with pytest.raises(flowdsl.FlowDSLError, match="cannot be the current folder"):
        flowdsl.export_onnx(_model(0.0), ".")
    assert empty.is_dir() and not os.listdir(empty)


def test_recover_rolls_forward_a_complete_staged_export_and_removes_the_rest(tmp_path):
    flowdsl.export_onnx(_model(0.0), tmp_path / "o")
    eid = pair.verify_export(tmp_path / "o")["export_id"]
    staged = tmp_path / ".o.export-deadbeef"
    os.rename(tmp_path / "o", staged)  # killed between the fallback's two renames: target missing
    (tmp_path / ".o.export-0000").mkdir()  # an incomplete staging folder
    assert not (tmp_path / "o").exists()
    done = pair.recover(tmp_path / "o")
    assert any("recovered" in d for d in done)
    assert pair.verify_export(tmp_path / "o")["export_id"] == eid and sorted(os.listdir(tmp_path)) == ["o"]
    os.rename(tmp_path / "o", tmp_path / ".o.old-1")  # only the old one is left: rolled back
    pair.recover(tmp_path / "o")
    assert pair.verify_export(tmp_path / "o")["export_id"] == eid and sorted(os.listdir(tmp_path)) == ["o"]


def test_fallback_swap_without_renameat2(tmp_path, monkeypatch):
    flowdsl.export_onnx(_model(0.0), tmp_path / "o")
    monkeypatch.setattr(pair, "_exchange", lambda a, b: False)
    flowdsl.export_onnx(_model(0.2), tmp_path / "o")
    pair.verify_export(tmp_path / "o")
    assert sorted(os.listdir(tmp_path)) == ["o"] and _roundtrip_error(tmp_path / "o") < 1e-3


# -- interrupted exports (subprocess) ---------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    # Ctrl-C as a terminal delivers it: a process started from a background job of a script
    # inherits SIGINT ignored, and Python keeps an inherited SIG_IGN
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import torch, flowdsl
    from flowdsl.runtime.export import onnx as ox, pair

    point, folder, no_exchange = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    spec = flowdsl.parse(sys.stdin.read())

    def pause(name):
        if name == point:
            print("AT", name, flush=True)
            time.sleep(120)

    fin = ox._finalize
    def finalize(raw, path, spec, direction, extra):
        fin(raw, path, spec, direction, extra)
        pause("after-" + direction)
    ox._finalize = finalize
    man = pair.write_manifest
    def manifest(*a, **k):
        man(*a, **k)
        pause("after-manifest")
    pair.write_manifest = manifest
    exch = pair._exchange
    def exchange(a, b):
        if no_exchange:
            return False
        ok = exch(a, b)
        pause("after-exchange")
        return ok
    pair._exchange = exchange
    ren = os.rename
    def rename(a, b):
        ren(a, b)
        if ".old-" in os.fspath(b):
            pause("between-renames")
    os.rename = rename

    model = flowdsl.compile(spec, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3)
    print("START", flush=True)
    ox.export_onnx(model, folder)
    print("DONE", flush=True)
    """
)

KILL, INT = signal.SIGKILL, signal.SIGINT
#: (where the export stops, fallback without renameat2, signal); each case is a subprocess (~10 s),
#: so the cases are the moments where a mixed or missing folder could appear
CASES = [
    ("after-forward", "0", KILL),  # forward.onnx written, inverse.onnx not yet (the moment)
    ("after-forward", "0", INT),
    ("after-exchange", "0", KILL),  # swapped in, the old folder not yet deleted
    ("between-renames", "1", KILL),  # fallback: the old folder moved away, the new one not yet in
    ("between-renames", "1", INT),
]


@pytest.mark.parametrize("point,no_exchange,sig", CASES, ids=[f"{p}-{s.name}" for p, _, s in CASES])
def test_killed_export_never_leaves_a_mixed_pair(tmp_path, point, no_exchange, sig):
    folder = tmp_path / "onnx"
    flowdsl.export_onnx(_model(0.0), folder)  # the previous export
    old_id = pair.verify_export(folder)["export_id"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, point, str(folder), no_exchange],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    proc.stdin.write(SPEC)
    proc.stdin.close()
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("AT "):
            break
    assert lines and lines[-1].startswith("AT "), (lines, proc.stderr.read()[-2000:])
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    # what a reader sees now: the old export or the new one, whole, or (fallback, SIGKILL between the
    # renames) no folder at all, never a mixture
    if folder.exists():
        m = pair.verify_export(folder)
        assert json.loads((folder / "export.json").read_text())["export_id"] == m["export_id"]
        assert _roundtrip_error(folder) < 1e-3
        if point.startswith("after-") and point != "after-exchange":
            assert m["export_id"] == old_id  # not yet swapped in: the previous export is untouched
        elif point == "after-exchange":
            assert m["export_id"] != old_id
    else:
        assert sig == signal.SIGKILL and point == "between-renames"
    # the next export cleans up (or first completes) what was left, and leaves one folder
    pair.recover(folder)
    assert folder.exists() and pair.verify_export(folder)
    flowdsl.export_onnx(_model(0.5), folder)
    assert sorted(os.listdir(tmp_path)) == ["onnx"] and _roundtrip_error(folder) < 1e-3
