"""flowdsl export: a run folder or checkpoint is accepted, untrained weights only on purpose, the
weights used are printed, NaN weights and NaN tolerances are refused, outputs checked first."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowdsl.cli import main
from flowdsl.runtime.export.pair import verify_export
from flowdsl.runtime.training import train

SPEC = """
flow tiny_moons {
    input vector(dim=2)
    repeat 2 { actnorm coupling(kind=affine, net=mlp, hidden=8, depth=1) permute(kind=reverse) }
    prior gaussian(learned=true)
    train(data=moons, batch=32, lr=3e-3, steps=3, seed=1, warmup=1, eval_every=3)
}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("export_run")
    (d / "tiny.flow").write_text(SPEC, encoding="utf-8")
    train(d / "tiny.flow", out=d / "run", steps=3, eval_every=3, sample_n=0, val_max=32, quiet=True)
    return d


def _export(*args: str) -> int:
    try:
        return main(["export", *args])
    except SystemExit as e:  # usage errors
        return int(e.code)


def test_a_run_folder_is_exported_with_its_best_checkpoint(run, tmp_path, capsys):
    out = tmp_path / "o"
    assert _export(str(run / "run"), "--out", str(out)) == 0
    text = capsys.readouterr().out
    assert f"weights: {run / 'run' / 'best.pt'}, step 3" in text and "prior.onnx" in text
    # each file's inputs and outputs, read back from the file
    assert "forward.onnx: x (B,2) -> z, logdet, log_prob" in text
    assert "inverse.onnx: z (B,2) -> x, log_prob" in text
    assert "prior.onnx: normal (B,2), temperature (1,) -> z" in text
    assert "inverse_log_prob" in text  # a row of the parity table
    m = verify_export(out)
    assert m["weights"] == f"{run / 'run' / 'best.pt'}, step 3"
    # the trained prior is in the graph: prior.onnx at temperature 1 with zero noise gives the learned mean
    import numpy as np
    import onnxruntime as ort

    from flowdsl.runtime.training.models import load_model

    _, model, _ = load_model(run / "run")
    sess = ort.InferenceSession(str(out / "prior.onnx"), providers=["CPUExecutionProvider"])
    (z,) = sess.run(None, {"normal": np.zeros((1, 2), np.float32), "temperature": np.array([1.0], np.float32)})
    assert np.allclose(z[0], model.prior.loc.detach().numpy(), atol=1e-6)
    assert float(model.prior.loc.detach().abs().max()) > 0  # training moved it, so the check above means something


def test_a_checkpoint_file_and_a_spec_with_checkpoint(run, tmp_path, capsys):
    assert _export(str(run / "run" / "last.pt"), "--out", str(tmp_path / "a")) == 0
    assert f"weights: {run / 'run' / 'last.pt'}, step 3" in capsys.readouterr().out
    assert (
        _export(str(run / "tiny.flow"), "--checkpoint", str(run / "run" / "best.pt"), "--out", str(tmp_path / "b")) == 0
    )
    assert "step 3" in capsys.readouterr().out
    assert _export(str(run / "run"), "--checkpoint", str(run / "run" / "best.pt"), "--out", str(tmp_path / "c")) == 1
    assert "carries its own weights" in capsys.readouterr().err


def test_untrained_export_needs_the_flag_and_says_so(run, tmp_path, capsys):
    out = tmp_path / "u"
    assert _export(str(run / "tiny.flow"), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "no trained weights" in err and "--untrained" in err and not out.exists()
    assert _export(str(run / "tiny.flow"), "--untrained", "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert "UNTRAINED" in captured.err and "weights: untrained" in captured.out
    assert verify_export(out)["weights"] == "untrained"


def test_nonfinite_weights_are_refused(run, tmp_path, capsys):
    from flowdsl.runtime.training import checkpoint
    from flowdsl.runtime.training.checkpoint import read_checkpoint, save_checkpoint

    ck = read_checkpoint(run / "run" / "best.pt")
    state = {k: v.clone() for k, v in ck["model"].items()}
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key].view(-1)[1] = float("inf")
    bad = tmp_path / "bad.pt"
    fields = ("spec_text", "spec_sha256", "spec_name", "spec_filename", "step", "config", "extra")
    with pytest.MonkeyPatch.context() as mp:  # a file from an older flowdsl, or one damaged on disk:
        mp.setattr(checkpoint, "first_nonfinite", lambda *a, **k: None)  # today's writer refuses NaN
        save_checkpoint(bad, model_state=state, **{k: ck[k] for k in fields})
    out = tmp_path / "o"
    assert _export(str(bad), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "NaN or Inf" in err and key in err and "Traceback" not in err and not out.exists()
    assert _export(str(run / "tiny.flow"), "--checkpoint", str(bad), "--out", str(out)) == 1
    assert "NaN or Inf" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag,value",
    [("--tolerance", "nan"), ("--tolerance", "0"), ("--tolerance", "-1"), ("--batch", "0"), ("--batch", "10000000")],
)
def test_numeric_flags_are_validated(run, tmp_path, flag, value, capsys):
    assert _export(str(run / "run"), "--out", str(tmp_path / "o"), flag, value) == 1
    assert "error: argument" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_nan_parity_is_a_failure_with_exit_1(run, tmp_path, capsys, monkeypatch):
    from flowdsl.runtime.export import onnx as export

    check = export.check_parity
    monkeypatch.setattr(export, "check_parity", lambda *a, **k: {**check(*a, **k), "z_rel": float("nan")})
    assert _export(str(run / "run"), "--out", str(tmp_path / "o")) == 1
    assert "z nan" in capsys.readouterr().err


def test_export_into_a_folder_with_other_files_is_refused(run, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert _export(str(run / "run"), "--out", str(tmp_path)) == 1
    assert "holds other files (keep.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
