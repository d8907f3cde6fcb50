"""The command line: check, check --explain, graph, export; exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SPECS = Path(__file__).resolve().parents[2] / "specs"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowdsl", *args], capture_output=True, text=True)


def test_check_prints_table_with_totals():
    out = run("check", str(SPECS / "glow_digits.flow"))
    assert out.returncode == 0, out.stderr
    assert "shape in -> out" in out.stdout and "(1, 8, 8) -> (4, 4, 4)" in out.stdout
    assert "parameters" in out.stdout.splitlines()[-2] and ": ok" in out.stdout


def test_check_explain_prints_ir_after_each_pass():
    out = run("check", "--explain", str(SPECS / "glow_digits.flow"))
    assert out.returncode == 0, out.stderr
    for name in ("parse", "expand", "build_graph", "infer_shapes", "check"):
        assert f"after pass: {name}" in out.stdout
    assert "(via step)" in out.stdout


def test_graph_writes_dot_svg_png(tmp_path):
    for ext in ("dot", "svg", "png"):
        target = tmp_path / f"g.{ext}"
        out = run("graph", str(SPECS / "glow_digits.flow"), "-o", str(target))
        assert out.returncode == 0, out.stderr
        data = target.read_bytes()
        assert len(data) > 200
    assert b"digraph" in (tmp_path / "g.dot").read_bytes()
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "g.svg").read_bytes()


def test_graph_bad_extension_is_a_user_error(tmp_path):
    out = run("graph", str(SPECS / "glow_digits.flow"), "-o", str(tmp_path / "g.bmpx"))
    assert out.returncode == 1 and "unknown drawing format" in out.stderr and "Traceback" not in out.stderr


def test_export_runs_onnxruntime_and_prints_errors(tmp_path):
    out = run("export", str(SPECS / "realnvp_moons.flow"), "--untrained", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "UNTRAINED" in out.stderr and "weights: untrained" in out.stdout
    assert (tmp_path / "forward.onnx").exists() and (tmp_path / "inverse.onnx").exists()
    assert "log_prob" in out.stdout and "inverse" in out.stdout


def test_missing_file_is_user_error():
    out = run("check", "/nonexistent/x.flow")
    assert out.returncode == 1 and "cannot read spec file" in out.stderr


def test_demo_trains_samples_and_exports(tmp_path):
    out = run("demo", "--out", str(tmp_path), "--steps", "30")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test bits/dim" in out.stdout and "onnxruntime vs PyTorch" in out.stdout
    assert (tmp_path / "glow_digits" / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "glow_digits" / "onnx" / "forward.onnx").exists()


def test_export_fails_with_exit_1_when_parity_is_nan(tmp_path, monkeypatch, capsys):
    from flowdsl.cli import main
    from flowdsl.runtime.export import onnx as export

    check = export.check_parity

    def nan_parity(*args, **kw):
        return {**check(*args, **kw), "log_prob_rel": float("nan")}

    monkeypatch.setattr(export, "check_parity", nan_parity)
    assert main(["export", str(SPECS / "realnvp_moons.flow"), "--untrained", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "onnxruntime disagrees with PyTorch" in err and "log_prob nan" in err and "Traceback" not in err


def test_out_of_memory_is_a_user_error_with_a_message(monkeypatch, capsys):
    import flowdsl.cli as cli

    def exhausted(args):
        raise MemoryError

    real = cli.build_parser

    def parser_with_a_hungry_check(*a, **k):
        p = real(*a, **k)
        p.set_defaults(func=exhausted)
        for action in p._subparsers._group_actions:
            for sub in action.choices.values():
                sub.set_defaults(func=exhausted)
        return p

    monkeypatch.setattr(cli, "build_parser", parser_with_a_hungry_check)
    assert cli.main(["check", "x.flow"]) == 1
    err = capsys.readouterr().err
    assert "out of memory" in err and "FLOWDSL_MAX_" in err and "Traceback" not in err
