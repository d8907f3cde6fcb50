"""The run folder's workflow: resume does what the user means (issue #14 item 1) and nothing of a
previous run is lost (issue #15): locks, --overwrite, finite checkpoints, write failures, modes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowdsl.cli import main
from flowdsl.errors import CheckpointError, DataError, NumericalError
from flowdsl.runtime.training import read_checkpoint, train
from flowdsl.runtime.training.models import ModelFactory

SPEC = """
flow run_moons {
    input vector(dim=2)
    repeat 2 { actnorm coupling(kind=affine, net=mlp, hidden=8, depth=1) permute }
    prior gaussian
    train(data=moons, batch=32, lr=3e-3, steps=4, seed=1, warmup=1, eval_every=2, checkpoint_every=2)
}
"""
FAST = {"sample_n": 0, "val_max": 64, "quiet": True}
QUIET = ["--quiet", "--sample-n", "0"]


@pytest.fixture()
def spec_file(tmp_path) -> Path:
    p = tmp_path / "moons.flow"
    p.write_text(SPEC, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> Path:
    """A finished 4-step run (copy it before changing it)."""
    d = tmp_path_factory.mktemp("done")
    train(SPEC, out=d / "r", **FAST)
    return d / "r"


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def _snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file() and p.name != ".lock"}


# -- resume (issue #14 item 1) ------------------------------------------------------------------
def test_train_run_folder_resume_continues_it(done_run, tmp_path, capsys):
    run = _copy(done_run, tmp_path / "r")
    assert main(["train", str(run), "--resume", "--steps", "6", *QUIET]) == 0
    assert read_checkpoint(run / "last.pt")["step"] == 6
    # a run folder without --resume is refused (a new run starts from a spec file)
    assert main(["train", str(run), "--steps", "8", *QUIET]) == 1
    err = capsys.readouterr().err
    assert "run folder" in err and "--resume" in err and "Is a directory" not in err
    assert read_checkpoint(run / "last.pt")["step"] == 6
    # --out naming another folder than the run folder is refused too
    assert main(["train", str(run), "--resume", "--out", str(tmp_path / "else"), *QUIET]) == 1
    assert not (tmp_path / "else").exists()


def test_resume_with_nothing_to_resume_is_an_error_never_a_fresh_start(spec_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default run folder is runs/<flow name>
    assert main(["train", str(spec_file), "--resume", *QUIET]) == 1
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "run_moons").exists()  # no new run was started
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(SPEC, out=tmp_path / "empty", resume=True, **FAST)
    assert not (tmp_path / "empty").exists()


def test_resume_into_a_folder_that_lost_last_pt_keeps_the_rest(done_run, tmp_path):
    run = _copy(done_run, tmp_path / "r")
    (run / "last.pt").unlink()
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match="no last.pt") as e:
        train(SPEC, out=run, resume=True, **FAST)
    assert "never starts a new run" in e.value.message
    assert _snapshot(run) == before  # best.pt, weights.safetensors, metrics.csv untouched
    # nor does a plain run (no --resume) start over it: best.pt is a run to keep
    with pytest.raises(CheckpointError, match="--overwrite"):
        train(SPEC, out=run, **FAST)
    assert _snapshot(run) == before


def test_resume_and_overwrite_together_are_refused(done_run, tmp_path):
    run = _copy(done_run, tmp_path / "r")
    before = _snapshot(run)
    with pytest.raises(CheckpointError, match="give one of them"):
        train(SPEC, out=run, resume=True, overwrite=True, **FAST)
    assert _snapshot(run) == before


def test_resume_with_run_defining_settings_needs_override_and_is_recorded(done_run, tmp_path):
    run = _copy(done_run, tmp_path / "r")
    before = _snapshot(run)
    for kw, name in ((dict(lr=1e-2), "lr"), (dict(batch=8), "batch"), (dict(data="circles"), "data")):
        with pytest.raises(CheckpointError, match=f"settings other than the run's: {name} ") as e:
            train(SPEC, out=run, resume=True, steps=6, **kw, **FAST)
        assert "--override-settings" in e.value.render()
        assert _snapshot(run) == before
    # the same values as stored are no change; steps may change freely
    s = train(SPEC, out=run, resume=True, steps=5, lr=3e-3, batch=32, data="moons", **FAST)
    assert s["step"] == 5 and s["setting_changes"] == []
    s = train(SPEC, out=run, resume=True, steps=7, lr=1e-2, override_settings=True, **FAST)
    change = {"step": 5, "changes": {"lr": [3e-3, 1e-2]}}
    assert s["step"] == 7 and s["setting_changes"] == [change]
    assert json.loads((run / "summary.json").read_text())["setting_changes"] == [change]
    assert json.loads((run / "config.json").read_text())["setting_changes"] == [change]
    ck = read_checkpoint(run / "last.pt")
    assert ck["extra"]["setting_changes"] == [change] and ck["config"]["lr"] == 1e-2
    # a later resume keeps the history (and the new value is now the run's)
    s = train(SPEC, out=run, resume=True, steps=8, **FAST)
    assert s["setting_changes"] == [change]


def test_cli_override_settings_flag(done_run, tmp_path, capsys):
    run = _copy(done_run, tmp_path / "r")
    assert main(["train", str(run), "--resume", "--steps", "6", "--lr", "0.01", *QUIET]) == 1
    assert "lr 0.003 → 0.01" in capsys.readouterr().err
    assert main(["train", str(run), "--resume", "--steps", "6", "--lr", "0.01", "--override-settings", *QUIET]) == 0
    assert read_checkpoint(run / "last.pt")["extra"]["setting_changes"][0]["changes"] == {"lr": [0.003, 0.01]}


# -- locks ----------------------------------------------------------------------------------------
def test_a_second_training_into_a_locked_folder_is_refused(done_run, tmp_path, capsys):
    from flowdsl.runtime.training.run_folder import RunLock

    run = _copy(done_run, tmp_path / "r")
    before = _snapshot(run)
    with RunLock(run):  # another training holds the folder
        with pytest.raises(CheckpointError, match="in use by another training"):
            train(SPEC, out=run, resume=True, steps=6, **FAST)
        with pytest.raises(CheckpointError, match="in use"):
            train(SPEC, out=run, overwrite=True, **FAST)
        assert main(["train", str(run), "--resume", "--steps", "6", *QUIET]) == 1
        assert "in use by another training" in capsys.readouterr().err
    assert _snapshot(run) == before
    # released: the lock file stays, and does not block
    assert (run / ".lock").exists()
    assert train(SPEC, out=run, resume=True, steps=6, **FAST)["step"] == 6


def test_two_processes_into_one_folder_and_a_killed_holder(spec_file, tmp_path, capsys):
    run = tmp_path / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "flowdsl", "train", str(spec_file), "--out", str(run), *QUIET]
    proc = subprocess.Popen(
        [*cmd, "--steps", "100000", "--checkpoint-every", "5", "--eval-every", "100000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "last.pt").exists() and proc.poll() is None:
            time.sleep(0.05)
        assert (run / "last.pt").exists()
        rc = main(["train", str(spec_file), "--out", str(run), *QUIET, "--overwrite", "--steps", "3"])
        err = capsys.readouterr().err
        assert rc == 1 and "in use by another training" in err, err
        assert f"process {proc.pid}" in err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the killed process's lock does not block: the run resumes
    step = read_checkpoint(run / "last.pt")["step"]
    s = train(spec_file, out=run, resume=True, steps=step + 2, eval_every=100000, sample_n=0, quiet=True)
    assert s["step"] == step + 2


# -- --overwrite checks everything first ------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, error",
    [
        (dict(data="no_such_data_set"), DataError),
        (dict(lr=-1.0), DataError),
        (dict(clip=float("nan")), DataError),
    ],
)
def test_overwrite_with_bad_settings_or_data_removes_nothing(done_run, tmp_path, bad, error):
    run = _copy(done_run, tmp_path / "r")
    before = _snapshot(run)
    with pytest.raises(error):
        train(SPEC, out=run, overwrite=True, **bad, **FAST)
    assert _snapshot(run) == before


# -- finite checkpoints --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        dict(lr=float("inf")),
        dict(lr=float("nan")),
        dict(weight_decay=float("nan")),
        dict(weight_decay=float("inf")),
        dict(clip=float("nan")),
        dict(clip=0.0),
        dict(lr=0.0),
        dict(max_time=float("nan")),
    ],
)
def test_non_finite_or_out_of_range_settings_fail_before_anything_is_written(tmp_path, bad):
    with pytest.raises(DataError, match=f"invalid training settings: {next(iter(bad))} must be"):
        train(SPEC, out=tmp_path / "r", **bad, **FAST)
    assert not (tmp_path / "r").exists()


def test_cli_lr_inf_exits_1_and_writes_nothing(spec_file, tmp_path, capsys):
    try:
        rc = main(["train", str(spec_file), "--out", str(tmp_path / "r"), "--lr", "inf", *QUIET])
    except SystemExit as stop:  # refused by the flag's validated type (a usage error, exit 1)
        rc = stop.code
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "finite" in err, err  # here or in argparse (cli helper)
    assert not (tmp_path / "r").exists()


class PoisonedState(ModelFactory):
    """The real model plus a buffer that turns NaN after the 3rd training forward: the loss stays
    finite, only the state a checkpoint would hold is not."""

    def build(self, spec, seed):
        model = super().build(spec, seed)
        model.register_buffer("poison", torch.zeros(2))
        calls = {"n": 0}

        def hook(module, inputs, output):
            if module.training and torch.is_grad_enabled():
                calls["n"] += 1
                if calls["n"] > 3:
                    module.poison.fill_(float("nan"))

        model.register_forward_hook(hook)
        return model


def test_a_non_finite_state_is_never_checkpointed_and_the_last_good_one_is_named(tmp_path):
    run = tmp_path / "r"
    with pytest.raises(NumericalError) as e:
        train(SPEC, out=run, steps=10, eval_every=100, factory=PoisonedState(), **FAST)
    msg = e.value.message
    assert "not writing last.pt: model.poison holds NaN" in msg
    assert f"the last good checkpoint is {run / 'last.pt'} (step 2)" in msg and "--resume" in msg
    ck = read_checkpoint(run / "last.pt")
    assert ck["step"] == 2 and all(bool(torch.isfinite(v).all()) for v in ck["model"].values())


# -- failed checkpoint writes ----------------------------------------------------------------------
def test_a_failed_checkpoint_write_is_a_checkpoint_error_naming_the_last_good_one(tmp_path, monkeypatch):
    import flowdsl.runtime.training.checkpoint as ckmod

    real, calls = torch.save, {"n": 0}

    def failing_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # last.pt at step 2 (best.pt first), then the writer fails
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 512 vs 448")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(ckmod.torch, "save", failing_save)
    with pytest.raises(CheckpointError) as e:
        train(SPEC, out=tmp_path / "r", steps=10, eval_every=2, **FAST)
    msg = e.value.message
    assert "cannot write best.pt: [enforce fail at inline_container.cc" in msg
    assert f"the last good checkpoint is {tmp_path / 'r' / 'last.pt'} (step 2)" in msg
    assert e.value.filename == str(tmp_path / "r" / "best.pt")
    assert read_checkpoint(tmp_path / "r" / "last.pt")["step"] == 2
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


def test_file_size_limit_during_checkpointing_exits_1(spec_file, tmp_path, capsys):
    """``ulimit -f``: writes past the limit fail (Python ignores SIGXFSZ); torch's archive writer
    reports it as a RuntimeError ("enforce fail at inline_container.cc")."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # room for the small run files only
    try:
        rc = main(["train", str(spec_file), "--out", str(tmp_path / "r"), *QUIET])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err and "cannot write best.pt" in err, err
    assert "no checkpoint of this run was written" in err
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


# -- temp files and modes -------------------------------------------------------------------------
def test_stale_temp_files_of_ours_are_removed_others_kept(done_run, tmp_path):
    run = _copy(done_run, tmp_path / "r")
    old = time.time() - 3600
    stale = [run / ".last.pt.k2j3h4.tmp", run / ".best.pt.zz91.tmp"]
    fresh = run / ".last.pt.abc123.tmp"  # a write that may still be going on
    foreign = [run / ".notes.txt.x1.tmp", run / "last.pt.tmp"]
    for p in [*stale, fresh, *foreign]:
        p.write_bytes(b"partial")
    for p in [*stale, *foreign]:
        os.utime(p, (old, old))
    train(SPEC, out=run, resume=True, steps=5, **FAST)
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and all(p.exists() for p in foreign)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_get_the_same_mode_as_the_other_run_files(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        train(SPEC, out=tmp_path / "r", **FAST)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "r").iterdir() if not p.name.startswith(".")}
    assert {"last.pt", "best.pt", "weights.safetensors", "spec.flow", "summary.json"} <= modes.keys()
    assert set(modes.values()) == {mode}, modes


def test_fdrl_runs_are_locked_too(tmp_path):
    from flowdsl.runtime.objectives.fdrl.train import train_fdrl
    from flowdsl.runtime.training.run_folder import RunLock

    spec = Path(__file__).resolve().parents[3] / "specs" / "fdrl_moons.flow"
    run = tmp_path / "r"
    run.mkdir()
    with RunLock(run):
        with pytest.raises(CheckpointError, match="in use by another training"):
            train_fdrl(spec, out=run, steps=1, quiet=True)
    assert [p.name for p in run.iterdir()] == [".lock"]  # nothing else was written
