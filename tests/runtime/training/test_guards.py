"""Training guards: a non-finite loss stops with the step and the layer; Ctrl-C keeps the work."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowdsl.errors import NumericalError
from flowdsl.runtime.training import read_checkpoint, train
from flowdsl.runtime.training.loop import ModelFactory

SPEC = """
flow guard_moons {
    input vector(dim=2)
    repeat 2 { actnorm coupling(kind=affine, net=mlp, hidden=16, depth=1) permute }
    prior gaussian
    train(data=moons, batch=32, lr=3e-3, steps=40, seed=1, warmup=2, eval_every=20)
}
"""


class PoisonAfter(ModelFactory):
    """Builds the real model, then makes the second coupling emit NaN from the 4th call on."""

    def build(self, spec, seed):
        model = super().build(spec, seed)
        calls = {"n": 0}

        def hook(module, inputs, output):
            calls["n"] += 1
            if calls["n"] > 4:
                return output[0] * float("nan"), output[1]
            return output

        model.steps[4].register_forward_hook(hook)
        return model


def test_nonfinite_loss_stops_naming_step_and_layer(tmp_path):
    with pytest.raises(NumericalError) as info:
        train(SPEC, out=tmp_path / "run", factory=PoisonAfter(), quiet=True, sample_n=0)
    msg = str(info.value)
    assert "training stopped at step" in msg and "coupling1" in msg and "line 4" in msg
    # the message tells the truth about checkpoints: step 3 comes before the first checkpoint
    assert not (tmp_path / "run" / "last.pt").exists()
    assert "no checkpoint of this run was written" in msg and "start again" in msg and "--resume" not in msg


def test_ctrl_c_writes_a_checkpoint_and_resume_finishes(tmp_path):
    spec = tmp_path / "g.flow"
    spec.write_text(SPEC.replace("steps=40", "steps=100000"))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "flowdsl",
        "train",
        str(spec),
        "--out",
        str(run),
        "--checkpoint-every",
        "50",
        "--eval-every",
        "100000",
        "--sample-n",
        "0",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300  # generous: the machine may be busy
    while time.time() < deadline and not (run / "last.pt").exists() and proc.poll() is None:
        time.sleep(0.05)
    assert (run / "last.pt").exists(), "training never wrote its first checkpoint"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    # the message gives the exact command that continues the run (a run folder: its spec is stored)
    m = re.search(r"continue with:\n  (flowdsl train .+ --resume)\n", out)
    assert m, out
    cmd = shlex.split(m.group(1))
    assert cmd[:2] == ["flowdsl", "train"] and Path(cmd[2]) == run and cmd[3:] == ["--resume"]
    step = read_checkpoint(run / "last.pt")["step"]
    assert step > 0
    done = subprocess.run(
        [sys.executable, "-m", *cmd, "--steps", str(step + 10), "--sample-n", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert read_checkpoint(run / "last.pt")["step"] == step + 10
