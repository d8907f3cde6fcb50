"""flowdsl sample: the format the output's name asks for, refused outputs, bounded chunks,
finite temperatures and finite weights."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from flowdsl.cli import main


@pytest.fixture(scope="module")
def runs(tiny_runs) -> dict[str, Path]:
    return tiny_runs  # tests/runtime/training/conftest.py: trained once per session, only read here


def _sample(run: Path, *args: str) -> int:
    """The exit code of ``flowdsl sample RUN ARGS`` (usage errors exit through SystemExit)."""
    try:
        return main(["sample", str(run), *args])
    except SystemExit as e:
        return int(e.code)


def test_npy_and_npz_hold_the_raw_samples_and_their_log_prob(runs, tmp_path, capsys):
    from flowdsl.runtime.training.models import load_model
    from flowdsl.runtime.training.sampling import draw_samples

    npy, npz = tmp_path / "s.npy", tmp_path / "s.npz"
    assert _sample(runs["moons"], "--n", "40", "-t", "0.5", "--seed", "3", "-o", str(npy)) == 0
    assert _sample(runs["moons"], "--n", "40", "-t", "0.5", "--seed", "3", "-o", str(npz)) == 0
    assert "wrote 40 samples" in capsys.readouterr().out
    x = np.load(npy)
    assert npy.read_bytes()[:6] == b"\x93NUMPY" and x.shape == (40, 2) and x.dtype == np.float32
    z = np.load(npz)
    assert sorted(z.files) == ["log_prob", "step", "temperature", "x"]
    np.testing.assert_array_equal(z["x"], x)  # same seed, same samples
    assert float(z["temperature"]) == 0.5 and z["log_prob"].shape == (40,)
    _, model, _ = load_model(runs["moons"])
    ref = draw_samples(model, 40, 0.5, seed=3)
    np.testing.assert_array_equal(ref.numpy(), x)
    with torch.no_grad():  # log_prob is the model's density at those samples (independent forward pass)
        lp = model.double().log_prob(torch.from_numpy(x).double()).numpy()
    np.testing.assert_allclose(z["log_prob"], lp, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
@pytest.mark.parametrize("run", ["moons", "digits"])
def test_pictures_in_the_format_of_the_suffix(runs, tmp_path, run, suffix, magic):
    out = tmp_path / f"s{suffix}"
    assert _sample(runs[run], "--n", "9", "-o", str(out), "--data", "none") == 0
    assert out.read_bytes()[: len(magic)] == magic


def test_other_suffixes_and_special_files_are_refused_before_loading(runs, tmp_path, capsys):
    for name in ("s.txt", "s.jpg", "samples"):
        assert _sample(runs["moons"], "-o", str(tmp_path / name)) == 1
        err = capsys.readouterr().err
        assert "unknown format" in err and ".npy, .npz, .png, .svg, .pdf" in err and "Traceback" not in err
        assert not (tmp_path / name).exists()
    folder = tmp_path / "dir.png"
    folder.mkdir()
    assert _sample(runs["moons"], "-o", str(folder)) == 1
    assert "it is a folder" in capsys.readouterr().err
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    assert _sample(runs["moons"], "-o", str(fifo)) == 1
    assert "FIFO" in capsys.readouterr().err
    dev = tmp_path / "null.npy"  # a private copy of /dev/null's node: a failure cannot damage the real one
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except OSError:
        dev = None
    if dev is not None:
        for target in (dev, tmp_path / "link.png"):
            if target != dev:
                target.symlink_to(dev)
            assert _sample(runs["moons"], "-o", str(target)) == 1
            assert "character device" in capsys.readouterr().err
        assert stat.S_ISCHR(os.lstat(dev).st_mode)
    assert _sample(runs["moons"], "-o", str(tmp_path / "missing" / "s.png")) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["nan", "inf", "-0.1", "-inf"])
def test_temperature_must_be_finite_and_not_negative(runs, tmp_path, bad, capsys):
    out = tmp_path / "s.npy"
    assert _sample(runs["moons"], "-t", bad, "-o", str(out)) == 1
    assert "temperature" in capsys.readouterr().err and not out.exists()


def test_temperature_check_in_python():
    from flowdsl.errors import FlowDSLError
    from flowdsl.runtime.training.sampling import check_temperature

    assert check_temperature(0) == 0.0
    for bad in (float("nan"), float("inf"), -1e-9):
        with pytest.raises(FlowDSLError, match="finite and at least 0"):
            check_temperature(bad)


def test_n_is_bounded_by_the_limit(runs, tmp_path, capsys, monkeypatch):
    from flowdsl.compiler.limits import LIMITS

    assert _sample(runs["moons"], "--n", "0", "-o", str(tmp_path / "a.npy")) == 1
    assert _sample(runs["moons"], "--n", str(LIMITS.max_samples + 1), "-o", str(tmp_path / "a.npy")) == 1
    assert "must be at most" in capsys.readouterr().err


def test_samples_are_drawn_in_bounded_chunks(runs, monkeypatch):
    from flowdsl.compiler.limits import LIMITS
    from flowdsl.runtime.training.models import load_model
    from flowdsl.runtime.training.sampling import SAMPLE_CHUNK, draw_samples

    _, model, _ = load_model(runs["moons"])
    sizes = []
    orig = type(model).sample

    def spy(self, n, temperature=1.0):
        sizes.append(n)
        return orig(self, n, temperature)

    monkeypatch.setattr(type(model), "sample", spy)
    x = draw_samples(model, 2 * SAMPLE_CHUNK + 5, 1.0, seed=0)
    assert x.shape == (2 * SAMPLE_CHUNK + 5, 2) and sizes == [SAMPLE_CHUNK, SAMPLE_CHUNK, 5]
    sizes.clear()
    monkeypatch.setattr(LIMITS, "max_batch", 7)
    x2, lp = draw_samples(model, 20, 1.0, seed=0, with_log_prob=True)
    assert sizes == [7, 7, 6] and lp.shape == (20,) and torch.isfinite(lp).all()
    sizes.clear()
    monkeypatch.setattr(LIMITS, "max_samples", 10)
    with pytest.raises(Exception, match="LIMITS.max_samples"):
        draw_samples(model, 11, 1.0)
    assert sizes == []


def test_nonfinite_weights_are_refused(runs, tmp_path, capsys):
    from flowdsl.runtime.training import checkpoint
    from flowdsl.runtime.training.checkpoint import read_checkpoint, save_checkpoint

    ck = read_checkpoint(runs["moons"] / "best.pt")
    state = dict(ck["model"])
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    bad = tmp_path / "bad.pt"
    with pytest.MonkeyPatch.context() as mp:  # a file from an older flowdsl, or one damaged on disk:
        mp.setattr(checkpoint, "first_nonfinite", lambda *a, **k: None)  # today's writer refuses NaN
        save_checkpoint(
            bad,
            model_state=state,
            optimizer_state=None,
            spec_text=ck["spec_text"],
            spec_sha256=ck["spec_sha256"],
            spec_name=ck["spec_name"],
            spec_filename=ck["spec_filename"],
            step=ck["step"],
            config=ck["config"],
            extra=ck["extra"],
        )
    out = tmp_path / "s.npy"
    assert _sample(bad, "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert "NaN or Inf" in err and key in err and "Traceback" not in err and not out.exists()


def test_nonfinite_samples_are_reported_not_hidden(runs, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert _sample(runs["moons"], "--n", "20", "-t", "1e38", "-o", str(out)) == 0  # finite weights, overflowing z
    x = np.load(out)
    bad = int((~np.isfinite(x)).any(1).sum())
    assert bad > 0  # kept as they are in the raw output, not turned into zeros
    assert f"warning: {bad} of 20 samples hold NaN or Inf" in capsys.readouterr().out
