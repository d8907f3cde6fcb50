"""Fault tests: SIGKILL during checkpoint writes never corrupts the latest checkpoint; an
unwritable output folder gets a clear error."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from flowdsl.errors import FlowDSLError
from flowdsl.runtime.training import read_checkpoint, train

WRITER = textwrap.dedent(
    """
    import hashlib, sys, torch
    from flowdsl.runtime.training.checkpoint import save_checkpoint
    text = "flow t { input vector(dim=2) }"
    path = sys.argv[1]
    big = {"w%d" % i: torch.randn(256, 256) for i in range(24)}   # ~6 MB per checkpoint
    step = 0
    print("ready", flush=True)
    while True:
        step += 1
        big["w0"][0, 0] = float(step)
        save_checkpoint(path, spec_text=text, spec_sha256=hashlib.sha256(text.encode()).hexdigest(), step=step,
                        model_state=big)
    """
)


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_while_writing_checkpoints_keeps_the_last_one_valid(tmp_path, trial):
    path = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.time() + 60
    while not path.exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random(trial).uniform(0.05, 0.6))  # somewhere in the middle of a write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = read_checkpoint(path)  # raises CheckpointError if the file were corrupt
    assert ckpt["step"] >= 1
    assert float(ckpt["model"]["w0"][0, 0]) == ckpt["step"]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert all(name.endswith(".tmp") for name in leftovers)  # only an abandoned temp file, never last.pt


def test_training_into_an_unwritable_place_is_a_clear_error(tmp_path):
    blocker = tmp_path / "blocker.txt"  # a file where the run folder's parent should be
    blocker.write_text("not a folder")
    spec = "flow v { input vector(dim=2) actnorm coupling(hidden=8) train(data=moons, batch=16, steps=3) }"
    with pytest.raises(FlowDSLError) as info:
        train(spec, out=blocker / "run", quiet=True, sample_n=0)
    e = info.value
    # names the place it could not write, says so, and gives the OS's reason
    assert str(e.filename).startswith(str(blocker / "run")), e.filename
    assert str(blocker / "run") in e.message and "cannot write" in e.message, str(e)
    assert "not a directory" in e.message.lower(), str(e)
    assert blocker.read_text() == "not a folder"


def test_cli_train_unwritable_exits_1_without_traceback(tmp_path):
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("x")
    spec = tmp_path / "v.flow"
    spec.write_text("flow v { input vector(dim=2) actnorm coupling(hidden=8) train(data=moons, batch=16, steps=3) }")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "flowdsl", "train", str(spec), "--out", str(blocker / "run")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "error:" in out.stderr
    assert str(blocker / "run") in out.stderr and "cannot write" in out.stderr, out.stderr
