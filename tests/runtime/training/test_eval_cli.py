"""flowdsl eval RUN --data NAME|PATH: bits/dim (images) or NLL (vectors) of a trained run on other
data, checked against the formula on the model's own log_prob; validated flags; NaN weights refused."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flowdsl.cli import main


@pytest.fixture(scope="module")
def runs(tiny_runs) -> dict[str, Path]:
    return tiny_runs  # tests/runtime/training/conftest.py: trained once per session, only read here


def _eval(*args: str) -> int:
    try:
        return main(["eval", *args])
    except SystemExit as e:
        return int(e.code)


def test_image_bits_per_dim_match_the_formula(runs, tmp_path, capsys):
    from flowdsl.runtime.data import dequantize, load_for_spec
    from flowdsl.runtime.training.models import load_model

    js = tmp_path / "r.json"
    assert _eval(str(runs["digits"]), "--eval-max", "50", "--batch", "7", "--device", "cpu", "--json", str(js)) == 0
    out = capsys.readouterr().out
    res = json.loads(js.read_text())
    assert res["n"] == 50 and res["split"] == "test" and res["data"] == "digits" and res["step"] == 2
    assert f"{res['bits_per_dim']:.4f} bits/dim on 50 examples of digits" in out
    spec, model, _ = load_model(runs["digits"])
    ds = load_for_spec(spec, "digits", "test")
    x = dequantize(ds.x[:50], 17, "uniform", torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        lp = model.double().log_prob(x)
    ref = (-float(lp.mean()) / 64 + math.log(17)) / math.log(2)  # bits/dim of the discrete data
    assert res["bits_per_dim"] == pytest.approx(ref, rel=1e-5)
    # another batch size gives the same score (batches only split the work)
    assert _eval(str(runs["digits"]), "--eval-max", "50", "--batch", "50", "--json", str(js), "-q") == 0
    assert json.loads(js.read_text())["bits_per_dim"] == pytest.approx(ref, rel=1e-5)


def test_vectors_report_nll_on_other_data(runs, tmp_path, capsys):
    from flowdsl.runtime.data import load_for_spec
    from flowdsl.runtime.training.models import load_model

    js = tmp_path / "r.json"
    assert _eval(str(runs["moons"]), "--data", "8gaussians", "--eval-max", "300", "--json", str(js)) == 0
    assert "NLL" in capsys.readouterr().out
    res = json.loads(js.read_text())
    spec, model, _ = load_model(runs["moons"])
    x = load_for_spec(spec, "8gaussians", "test", seed=1).x[:300].double()
    with torch.no_grad():
        ref = -float(model.double().log_prob(x).mean())
    assert res["data"] == "8gaussians" and res["n"] == 300 and res["bits_per_dim"] is None
    assert res["nll_nats"] == pytest.approx(ref, rel=1e-5) and res["nll_nats_per_dim"] == pytest.approx(ref / 2)
    # data from a file
    arr = tmp_path / "pts.npy"
    np.save(arr, np.random.default_rng(0).standard_normal((40, 2)).astype(np.float32))
    assert _eval(str(runs["moons"]), "--data", str(arr), "--split", "train", "-q") == 0
    assert "NLL" in capsys.readouterr().out


def test_progress_bar_on_a_terminal(runs, monkeypatch, capsys):
    class TTY(io.StringIO):
        def isatty(self):
            return True

    err = TTY()
    monkeypatch.setattr("sys.stderr", err)
    assert _eval(str(runs["moons"]), "--eval-max", "100", "--batch", "10") == 0
    assert "100/100" in err.getvalue() and "eval tiny_moons" in err.getvalue()


@pytest.mark.parametrize(
    "flag,value",
    [("--batch", "0"), ("--batch", "1e9"), ("--batch", str(10**9)), ("--eval-max", "0"), ("--device", "tpu")],
)
def test_flags_are_validated(runs, flag, value, capsys):
    assert _eval(str(runs["moons"]), flag, value) == 1
    assert "error: argument" in capsys.readouterr().err


def test_errors_are_user_errors(runs, tmp_path, capsys):
    assert _eval(str(tmp_path / "nowhere")) == 1
    assert _eval(str(runs["moons"]), "--data", "digits") == 1  # images for a 2-D vector flow
    if not torch.cuda.is_available():
        assert _eval(str(runs["moons"]), "--device", "cuda:3") == 1  # a missing GPU is a user error
    assert "Traceback" not in capsys.readouterr().err


def test_nonfinite_weights_are_refused(runs, tmp_path, capsys):
    from flowdsl.runtime.training import checkpoint
    from flowdsl.runtime.training.checkpoint import read_checkpoint, save_checkpoint

    ck = read_checkpoint(runs["moons"] / "best.pt")
    state = {k: v.clone() for k, v in ck["model"].items()}
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key].view(-1)[0] = float("nan")
    fields = ("spec_text", "spec_sha256", "spec_name", "spec_filename", "step", "config", "extra")
    with pytest.MonkeyPatch.context() as mp:  # a file from an older flowdsl, or one damaged on disk:
        mp.setattr(checkpoint, "first_nonfinite", lambda *a, **k: None)  # today's writer refuses NaN
        save_checkpoint(tmp_path / "bad.pt", model_state=state, **{k: ck[k] for k in fields})
    assert _eval(str(tmp_path / "bad.pt")) == 1
    assert "NaN or Inf" in capsys.readouterr().err
