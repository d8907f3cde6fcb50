"""Command-line conventions (issue #14 item 9): --version, --debug anywhere, usage errors exit 1
for every command, the top-level help, errors that name the file, the unclosed-bracket message."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

import flowdsl
from flowdsl.cli import build_parser, main
from flowdsl.errors import ParseError

SPECS = Path(__file__).resolve().parents[2] / "specs"


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version(capsys):
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and out.strip() == f"flowdsl {flowdsl.__version__}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_accepted_before_and_after_the_command(where, tmp_path, capsys):
    missing = str(tmp_path / "missing.flow")
    argv = ["--debug", "check", missing] if where == "before" else ["check", missing, "--debug"]
    code, _, err = _run(argv, capsys)
    assert code == 1
    assert "Traceback" in err and "cannot read spec file" in err


def test_without_debug_no_traceback(tmp_path, capsys):
    code, _, err = _run(["check", str(tmp_path / "missing.flow")], capsys)
    assert code == 1 and "Traceback" not in err


def _commands() -> list[str]:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_command_is_listed():
    names = _commands()
    assert {"check", "train", "sample", "explain", "bench", "fuzz"} <= set(names)
    assert any(n.startswith("fdrl-") for n in names)


@pytest.mark.parametrize("command", _commands())
def test_usage_errors_exit_1_for_every_command(command, capsys):
    """2 is documented as an internal error; argparse's own usage exit (2) is not used."""
    code, _, err = _run([command, "--no-such-flag"], capsys)
    assert code == 1, err
    assert "usage:" in err and "error:" in err and "Traceback" not in err


@pytest.mark.parametrize("command", _commands())
def test_debug_after_every_command_parses(command):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "--debug" in sub.choices[command]._option_string_actions


def test_top_level_help_says_train_does_mle_and_fdrl(capsys):
    code, out, _ = _run(["--help"], capsys)
    assert code == 0
    train = re.search(r"^\s+train\s+(.*?)(?=^\s{4}\S)", out, re.S | re.M)
    assert train, out
    text = " ".join(train.group(1).split())
    assert "MLE" in text and "FDRL" in text


def test_explain_errors_name_the_file(capsys):
    spec = str(SPECS / "glow_digits.flow")  # not an RG-Flow model
    code, _, err = _run(["explain", spec, "--receptive-fields"], capsys)
    assert code == 1 and err.startswith(f"{spec}: error:") and "<string>" not in err
    code, _, err = _run(["explain", spec], capsys)  # no mode given
    assert code == 1 and err.startswith(f"{spec}: error:") and "<string>" not in err


def test_explain_missing_source_names_it(tmp_path, capsys):
    missing = str(tmp_path / "nope.pt")
    code, _, err = _run(["explain", missing, "--mix"], capsys)
    assert code == 1 and err.startswith(f"{missing}: error:") and "<string>" not in err


def test_graph_errors_name_the_file(tmp_path, capsys):
    out = str(tmp_path / "g.bmpx")
    code, _, err = _run(["graph", str(SPECS / "realnvp_moons.flow"), "-o", out], capsys)
    assert code == 1 and err.startswith(f"{out}: error:") and "<string>" not in err


@pytest.mark.parametrize(
    "text,opener",
    [
        ("flow x {\n  input vector(dim=2)\n  repeat 2 {\n    permute\n}\n", (1, 8)),
        ("flow x {\n  input vector(dim=2)\n  repeat 2 {\n    permute\n", (3, 12)),
        ("flow x {\n  input vector(dim=2 # ) } {\n", (2, 15)),
        ('flow x {\n  input vector(dim=2)\n  train(data="}{")\n', (1, 8)),
        ("flow x {\n  input vector(dim=2)\n  coupling(hidden=[1, 2\n", (3, 19)),
    ],
)
def test_unexpected_end_names_the_unclosed_bracket(text, opener):
    with pytest.raises(ParseError) as info:
        flowdsl.parse(text, filename="u.flow")
    line, col = opener
    opened = text.splitlines()[line - 1][col - 1]
    assert f"the '{opened}' at {line}:{col} is not closed" in info.value.message


def test_version_is_fast(tmp_path):
    """``flowdsl --version`` needs neither torch nor the runtime's commands."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom flowdsl.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit as e:\n"
        "    assert e.code == 0\nprint('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.splitlines() == [f"flowdsl {flowdsl.__version__}", "False"], out.stdout + out.stderr
