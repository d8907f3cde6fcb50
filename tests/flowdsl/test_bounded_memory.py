"""Every input path is bounded: issue #15 item 4's attacks under a 4 GB address-space limit
(``ulimit -v 4000000``, set with ``resource.setrlimit(RLIMIT_AS)`` in the child) each end with
exit 1 and a message naming the limit, in under 10 s, instead of a MemoryError, a hang or an
"ok". The attack files are made in ``tmp_path`` in well under a second each (``attacks.py``).

The ``check`` attacks run one subprocess each (``check`` imports no torch, so it starts fast).
The ``train`` attacks share one subprocess that imports torch once and then runs each command
through ``flowdsl.cli.main``, timing each (the 10 s is the command's, not torch's import).
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("attacks", Path(__file__).parents[1] / "runtime" / "data" / "attacks.py")
attacks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(attacks)

LIMIT_AS = 4_000_000 * 1024  # ulimit -v 4000000 (KiB)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


_DRIVER = r"""
import json, sys, time
import flowdsl.cli
if sys.argv[1] == "train":
    import torch, flowdsl.runtime.training, flowdsl.runtime.data  # imported before the clock starts
out = []
for argv in json.loads(sys.argv[2]):
    t0 = time.perf_counter()
    try:
        rc = flowdsl.cli.main(argv)
    except SystemExit as e:
        rc = e.code
    out.append([rc, time.perf_counter() - t0])
    sys.stderr.write("\n@@END@@\n")
print("RESULTS " + json.dumps(out))
"""


def _run(kind: str, commands: list[list[str]], cwd: Path, timeout: float = 240) -> list[tuple[int, float, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWDSL_")}
    r = subprocess.run(
        [sys.executable, "-c", _DRIVER, kind, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limit_memory,
        cwd=cwd,
        env=env,
    )
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULTS ")]
    assert line, f"driver died (rc {r.returncode}): {r.stderr[-2000:]}"
    results = json.loads(line[-1][len("RESULTS ") :])
    messages = r.stderr.split("\n@@END@@\n")
    return [(rc, dt, msg) for (rc, dt), msg in zip(results, messages)]


CONV_SPEC = """flow c {
  input image(channels=2048, height=8, width=8)
  conv(kind=emerging)
  prior gaussian
}
"""


def test_check_attacks_are_bounded(tmp_path):
    (tmp_path / "conv.flow").write_text(CONV_SPEC)
    (tmp_path / "huge.flow").write_bytes(b"flow f { input vector(dim=2) prior gaussian }\n" + b" " * 3_000_000)
    os.mkfifo(tmp_path / "fifo.flow")
    batch = "flow f { input vector(dim=2) actnorm prior gaussian train(batch=1000000) }\n"
    (tmp_path / "batch.flow").write_text(batch)
    commands = [
        ["check", "/dev/zero"],
        ["check", "fifo.flow"],
        ["check", "huge.flow"],
        ["check", "batch.flow"],
    ]
    for (rc, dt, msg), cmd, word in zip(
        _run("check", commands, tmp_path),
        commands,
        ["not a regular file", "FIFO", "FLOWDSL_MAX_SOURCE_BYTES", "FLOWDSL_MAX_BATCH"],
    ):
        assert rc == 1, (cmd, msg)
        assert word in msg, (cmd, msg)
        assert dt < 10, (cmd, dt)


def test_check_of_a_wide_emerging_conv_reports_the_plan_estimate(tmp_path):
    """The torch-free check estimates what planning the inverse would take and refuses it (the
    plan once took 8 GB; under a memory limit the MemoryError was swallowed into an "ok")."""
    (tmp_path / "conv.flow").write_text(CONV_SPEC)
    ((rc, dt, msg),) = _run("check", [["check", "conv.flow"]], tmp_path)
    assert rc == 1, msg
    assert "FLOWDSL_MAX_PLAN_BYTES" in msg and "conv.flow:3:" in msg and " ok " not in msg
    assert dt < 10


def test_plan_estimate_covers_what_the_runtime_planner_keeps():
    """An independent reference: the index maps the runtime's solver builds (two halves), and the
    dense operators it computes from them, are within the kind's estimate."""
    import torch

    from flowdsl.compiler.kinds.conv import plan_bytes
    from flowdsl.runtime.layers._emerging_solver import ARQuadrantSolver

    for c, h, w, k in [(4, 4, 4, 3), (12, 8, 8, 3), (24, 8, 8, 5), (64, 4, 4, 3)]:
        kept = 0
        for direction in ("br", "tl"):
            s = ARQuadrantSolver(c, h, w, k, direction)
            kept += sum(t.numel() * t.element_size() for t in s.buffers().values())
            kept += (s.N * s.N + s.N * s.K) * 8  # D⁻¹ and G, float64
        assert kept <= plan_bytes("emerging", c, h, w, k), (c, h, w, k)
    del torch


def test_train_attacks_are_bounded(tmp_path):
    attacks.zip_bomb_npz(tmp_path / "bomb.npz", gib=5.0)  # 5 MB on disk, 5 GiB unpacked
    attacks.npy_claiming_rows(tmp_path / "rows.npy", rows=10**10)
    (tmp_path / "big").mkdir()
    attacks.png_of_size(tmp_path / "big" / "a.png", 20000, 20000)
    (tmp_path / "wide").mkdir()
    attacks.png_of_size(tmp_path / "wide" / "a.png", 11000, 11000, "RGB")
    (tmp_path / "v.flow").write_text("flow v { input vector(dim=2) actnorm prior gaussian }\n")
    (tmp_path / "i.flow").write_text("flow i { input image(channels=1, height=8, width=8) actnorm prior gaussian }\n")
    os.mkfifo(tmp_path / "fifo.flow")
    common = ["--steps", "1", "--out", "run", "--overwrite"]
    cases = [
        (["train", "v.flow", "--data", "bomb.npz"], "FLOWDSL_MAX_DATA_BYTES"),
        (["train", "v.flow", "--data", "rows.npy"], "FLOWDSL_MAX_DATA_BYTES"),
        (["train", "i.flow", "--data", "big"], "20000×20000"),
        (["train", "i.flow", "--data", "wide"], "not decoded"),
        (["train", "v.flow", "--data", "moons", "--batch", "100000000"], "65,536"),
        (["train", "fifo.flow", "--data", "moons"], "FIFO"),
    ]
    results = _run("train", [cmd + common for cmd, _ in cases], tmp_path)
    for (rc, dt, msg), (cmd, word) in zip(results, cases):
        assert rc == 1, (cmd, msg[-1500:])
        assert word in msg, (cmd, msg[-1500:])
        assert "MemoryError" not in msg and "internal error" not in msg
        assert dt < 10, (cmd, dt)


def test_python_api_batch_and_threads_are_checked_before_allocating(tmp_path):
    import flowdsl
    from flowdsl.errors import ResourceLimitError
    from flowdsl.runtime.training import train

    spec = flowdsl.parse("flow v { input vector(dim=2) actnorm prior gaussian train(data=moons) }")
    with pytest.raises(ResourceLimitError, match="FLOWDSL_MAX_BATCH"):
        train(spec, steps=1, out=tmp_path / "a", batch=100_000_000, quiet=True)
    with pytest.raises(ResourceLimitError, match="FLOWDSL_MAX_THREADS"):
        train(spec, steps=1, out=tmp_path / "b", threads=100_000, quiet=True)


def test_python_api_sample_count_is_checked_before_reading_the_run(tmp_path):
    from flowdsl.errors import ResourceLimitError
    from flowdsl.runtime.objectives.registry import sample

    with pytest.raises(ResourceLimitError, match="FLOWDSL_MAX_SAMPLES"):
        sample(tmp_path / "no-such-run", n=2_000_000)
    with pytest.raises(ResourceLimitError, match="whole number"):
        sample(tmp_path / "no-such-run", n=0)


def test_activation_estimate_refuses_a_python_batch(tmp_path, monkeypatch):
    import flowdsl
    from flowdsl.compiler.limits import LIMITS
    from flowdsl.compiler.passes.check import check_run_sizes, estimate_activation_bytes
    from flowdsl.errors import ResourceLimitError

    spec = flowdsl.parse("flow v { input vector(dim=64) actnorm coupling(hidden=8) prior gaussian }")
    need = estimate_activation_bytes(spec.graph, 1000)
    monkeypatch.setattr(LIMITS, "max_activation_bytes", need - 1)
    with pytest.raises(ResourceLimitError, match="FLOWDSL_MAX_ACTIVATION_BYTES"):
        check_run_sizes(spec.graph, batch=1000)
    check_run_sizes(spec.graph, batch=999)
