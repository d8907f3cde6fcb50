"""Every writer of a user-named path goes through flowdsl.outputs: graph, explain pictures, bench
reports, FDRL export and samples refuse folders, devices and FIFOs with exit 1 and write atomically."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import flowdsl
from flowdsl.cli import main
from flowdsl.outputs import OutputError

SPECS = Path(__file__).resolve().parents[2] / "specs"


def _exit(*argv: str) -> int:
    try:
        return main(list(argv))
    except SystemExit as e:
        return int(e.code)


def _specials(tmp_path: Path, suffix: str) -> list[Path]:
    """A FIFO, a folder and (as root) a private character device, all named ``*suffix``."""
    fifo = tmp_path / f"pipe{suffix}"
    os.mkfifo(fifo)
    folder = tmp_path / f"dir{suffix}"
    folder.mkdir()
    out = [fifo, folder]
    dev = tmp_path / f"null{suffix}"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        out.append(dev)
    except OSError:
        pass
    return out


def _untouched(paths: list[Path]) -> None:
    kinds = {p: os.lstat(p).st_mode for p in paths}
    for p, mode in kinds.items():
        assert stat.S_IFMT(os.lstat(p).st_mode) == stat.S_IFMT(mode)


@pytest.mark.parametrize("suffix", [".svg", ".dot"])
def test_graph_refuses_special_files_and_missing_folders(tmp_path, suffix, capsys):
    spec = str(SPECS / "realnvp_moons.flow")
    specials = _specials(tmp_path, suffix)
    for p in specials:
        assert _exit("graph", spec, "-o", str(p)) == 1
        err = capsys.readouterr().err
        assert "refusing to write the drawing" in err and "Traceback" not in err
    _untouched(specials)
    assert _exit("graph", spec, "-o", str(tmp_path / "no" / f"g{suffix}")) == 1
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "no").exists()
    assert _exit("graph", spec, "-o", str(tmp_path / f"g{suffix}")) == 0
    assert (tmp_path / f"g{suffix}").stat().st_size > 0


def test_explain_pictures_refuse_special_files(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowdsl.runtime.explain.plots import _save

    for p in _specials(tmp_path, ".png"):
        fig = plt.figure()
        with pytest.raises(OutputError):
            _save(plt, fig, p)
        assert not plt.fignum_exists(fig.number)  # closed either way
    fig = plt.figure()
    with pytest.raises(OutputError, match="does not exist"):  # parent folders are not made unasked
        _save(plt, fig, tmp_path / "sub" / "ok.png")
    fig = plt.figure()
    out = _save(plt, fig, tmp_path / "ok.png")
    assert Path(out).read_bytes()[:4] == b"\x89PNG"


def test_explain_refuses_the_output_before_loading(tmp_path, capsys, monkeypatch):
    import flowdsl.runtime.explain.cli as explain

    monkeypatch.setattr(explain, "load_model_for_explain", lambda *a, **k: pytest.fail("loaded the model"))
    (tmp_path / "out.png").mkdir()
    assert _exit("explain", str(SPECS / "rgflow_digits.flow"), "--mix", "-o", str(tmp_path / "out.png")) == 1
    assert "it is a folder" in capsys.readouterr().err


def test_bench_out_is_refused_before_the_benchmark_runs(tmp_path, capsys, monkeypatch):
    import flowdsl.runtime.bench.suite as suite

    monkeypatch.setattr(suite, "bench_spec", lambda *a, **k: pytest.fail("the benchmark ran"))
    folder = tmp_path / "BENCH.md"
    folder.mkdir()
    assert _exit("bench", str(SPECS / "realnvp_moons.flow"), "--out", str(folder)) == 1
    assert "refusing to write the benchmark report" in capsys.readouterr().err


def test_fdrl_export_refuses_a_fifo_where_the_file_goes(tmp_path):
    from flowdsl.runtime.objectives.fdrl.export import export_estimator
    from flowdsl.runtime.objectives.fdrl.model import FDRLModel, FDRLSettings

    spec = flowdsl.parse("flow e {\n    input vector(dim=2)\n    objective fdrl(estimator=mlp(hidden=8, depth=1))\n}\n")
    model = FDRLModel(spec, FDRLSettings(), seed=1)
    os.mkfifo(tmp_path / "estimator.onnx")
    with pytest.raises(OutputError, match="FIFO"):
        export_estimator(model, tmp_path)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "estimator.onnx").st_mode)
    assert sorted(os.listdir(tmp_path)) == ["estimator.onnx"]  # no partial file left
    path = export_estimator(model, tmp_path / "ok")
    assert Path(path).is_file() and sorted(os.listdir(tmp_path / "ok")) == ["estimator.onnx"]


def test_fdrl_sample_refuses_a_bad_output_before_sampling(tmp_path, monkeypatch, capsys):
    import flowdsl.runtime.objectives.fdrl.runs as runs

    monkeypatch.setattr(runs, "load_fdrl", lambda *a, **k: pytest.fail("loaded the run"))
    from flowdsl.runtime.objectives.fdrl.objective import FDRLRuntime

    rt = FDRLRuntime()
    with pytest.raises(OutputError, match="unknown format"):
        rt.sample(tmp_path, 4, out=tmp_path / "s.txt")
    os.mkfifo(tmp_path / "src.png")
    with pytest.raises(OutputError, match="FIFO"):
        rt.sample(tmp_path, 4, out=tmp_path / "s.png", show_source=str(tmp_path / "src.png"))
