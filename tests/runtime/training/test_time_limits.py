"""--max-time bounds the whole command, evaluations show progress, --eval-max caps them, and a
run shorter than its prior's annealing still writes valid JSON (issue #14 item 3)."""

from __future__ import annotations

import json
import math
import time

import pytest

from flowdsl.runtime.training import read_checkpoint, train
from flowdsl.runtime.training.cli import main
from flowdsl.runtime.training.models import ModelFactory

SPEC = """
flow time_moons {
    input vector(dim=2)
    repeat 2 { actnorm coupling(kind=affine, net=mlp, hidden=8, depth=1) permute }
    prior PRIOR
    train(data=moons, batch=32, lr=3e-3, steps=4, seed=1, warmup=1, eval_every=2, checkpoint_every=2)
}
"""
GAUSS = SPEC.replace("PRIOR", "gaussian")


def _warm_up() -> None:
    """First imports (torch's compiler, matplotlib) take seconds on a busy machine; a command pays
    them once, here the tests measure the run itself."""
    import matplotlib

    import flowdsl

    flowdsl.compile(flowdsl.parse(GAUSS))
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


class SlowEval(ModelFactory):
    """The real model, whose log_prob sleeps ``delay`` s per batch in eval mode (a big model's
    evaluation) and counts the examples it scores there."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.scored: list[int] = []

    def build(self, spec, seed):
        return self.wrap(super().build(spec, seed))

    def wrap(self, model):
        real = model.log_prob

        def log_prob(x):
            if not model.training:
                self.scored.append(len(x))
                time.sleep(self.delay)
            return real(x)

        model.log_prob = log_prob
        return model


def test_max_time_bounds_the_whole_command_evaluations_included(tmp_path, capsys):
    """One evaluation of validation (2,000) and test (5,000) takes 70 batches × 40 ms = 2.8 s;
    the end of a run used to add about three of them after the limit (≈ 8 s)."""
    _warm_up()
    limit = 5.0
    t0 = time.time()
    s = train(
        GAUSS,
        out=tmp_path / "r",
        steps=100_000,
        eval_every=100_000,
        test_batch=100,
        max_time=limit,
        sample_n=0,
        factory=SlowEval(0.04),
    )
    took = time.time() - t0
    assert s["stopped_early"] and 0 < s["step"] < 100_000
    assert took < limit + 1.5, (took, s)
    assert s["seconds"] <= limit + 1.0
    out = capsys.readouterr().out
    assert f"time limit of {limit:g} s: training stops at step {s['step']}" in out
    assert read_checkpoint(tmp_path / "r" / "last.pt")["step"] == s["step"]
    assert (tmp_path / "r" / "weights.safetensors").is_file() and (tmp_path / "r" / "summary.json").is_file()
    assert math.isfinite(s["final_test_bpd"]) and math.isfinite(s["test_bpd"])


def test_the_command_with_its_start_up_keeps_to_the_limit(tmp_path):
    """``flowdsl train --max-time T`` as a process: start-up (importing torch) counts too."""
    import os
    import subprocess
    import sys

    spec = tmp_path / "t.flow"
    spec.write_text(GAUSS)
    limit = 8.0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "flowdsl", "train", str(spec), "--out", str(tmp_path / "r"), "--steps", "1000000"]
    t0 = time.time()
    r = subprocess.run(
        [*cmd, "--max-time", str(limit), "--eval-every", "1000000"], capture_output=True, text=True, env=env
    )
    took = time.time() - t0
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["stopped_early"] and summary["seconds"] <= limit
    assert took < limit + 1.5, (took, summary["seconds"])  # interpreter exit after the summary


def test_a_time_limit_shorter_than_one_evaluation_cuts_it_and_says_so(tmp_path):
    _warm_up()
    s = train(
        GAUSS,
        out=tmp_path / "r",
        steps=100_000,
        eval_every=100_000,
        test_batch=100,
        max_time=2.0,
        sample_n=0,
        quiet=True,
        factory=SlowEval(0.1),  # one evaluation: 7 s
    )
    assert s["seconds"] <= 3.0
    assert s["partial_evaluations"] and "(--max-time)" in s["partial_evaluations"][0]
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["partial_evaluations"]


def test_long_evaluations_show_progress(tmp_path, capsys):
    train(GAUSS, out=tmp_path / "r", steps=2, test_batch=100, sample_n=0, factory=SlowEval(0.04))
    out = capsys.readouterr().out
    assert "  evaluating test: " in out and "/5,000 examples" in out, out
    assert "  evaluated test: 5,000 examples in " in out


def test_eval_max_caps_the_examples_of_every_evaluation(tmp_path, capsys, monkeypatch):
    import flowdsl

    counter, real_compile = SlowEval(), flowdsl.compile
    monkeypatch.setattr(flowdsl, "compile", lambda spec, seed=None: counter.wrap(real_compile(spec, seed=seed)))
    spec = tmp_path / "t.flow"
    spec.write_text(GAUSS)
    common = ["train", str(spec), "--quiet", "--sample-n", "0", "--test-batch", "50"]
    assert main([*common, "--out", str(tmp_path / "r"), "--eval-max", "100"]) == 0
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    # two evaluations of 100 + 100 examples, then the final report: the whole test split for the
    # last weights and, unless they are the best, for the best weights
    assert sum(counter.scored) == 2 * 200 + 5000 * (1 if s["best_step"] == 4 else 2), counter.scored
    assert s["eval_max"] == 100
    counter.scored.clear()
    assert main([*common, "--out", str(tmp_path / "all")]) == 0
    assert sum(counter.scored) == 2 * (2000 + 5000)  # the final report reuses the last evaluation


def test_eval_max_flag_is_validated(tmp_path, capsys):
    from flowdsl.cli import main as flowdsl_main

    spec = tmp_path / "t.flow"
    spec.write_text(GAUSS)
    with pytest.raises(SystemExit) as e:
        flowdsl_main(["train", str(spec), "--out", str(tmp_path / "r"), "--eval-max", "-1"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "--eval-max" in err and "must be at least 0" in err, err
    assert not (tmp_path / "r").exists()


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_a_run_shorter_than_the_annealing_warns_and_writes_valid_json(tmp_path, capsys):
    spec = SPEC.replace("PRIOR", "spike_slab(spike=0.05, slab=1.0, weight=0.5, anneal=8)")
    s = train(spec, out=tmp_path / "r", steps=4, sample_n=0, val_max=64)
    out = capsys.readouterr().out
    assert "warning: the run ends at step 4, before the prior's annealing ends (step 8)" in out
    assert "inf @ -1" not in out and "(no best yet)" in out and "no best.pt" in out
    summary = _strict_json((tmp_path / "r" / "summary.json").read_text())
    assert summary["best_val_bpd"] is None and summary["best_step"] == -1 and s["best_val_bpd"] is None
    assert summary["weights_step"] == 4 and not (tmp_path / "r" / "best.pt").exists()
    assert read_checkpoint(tmp_path / "r" / "weights.safetensors")["step"] == 4
    _strict_json((tmp_path / "r" / "config.json").read_text())
