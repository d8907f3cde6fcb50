"""Checker warnings are located values rendered like errors; ``check`` prints them, ``--werror``
turns them into exit 1."""

from __future__ import annotations

import flowdsl
from flowdsl.cli import main
from flowdsl.errors import CheckWarning

ODD = "flow f {\n  input vector(dim=3)\n  butterfly\n}\n"


def test_warnings_are_located_values_on_the_graph():
    spec = flowdsl.parse(ODD, filename="odd.flow")
    (w,) = spec.graph.warnings
    assert isinstance(w, CheckWarning) and (w.line, w.column) == (3, 3)
    text = w.render()
    assert text.startswith("odd.flow:3:3: warning: butterfly: over=all: the vector size 3 is odd")
    assert text.splitlines()[1].strip() == "butterfly" and text.splitlines()[2].strip() == "^~~~~~~~~"


def test_check_prints_warnings_and_werror_fails(tmp_path, capsys):
    f = tmp_path / "odd.flow"
    f.write_text(ODD)
    assert main(["check", str(f)]) == 0
    err = capsys.readouterr().err
    assert f"{f}:3:3: warning: butterfly: over=all" in err
    assert main(["check", str(f), "--werror"]) == 1
    assert "treated as errors" in capsys.readouterr().err


def test_a_clean_spec_has_no_warnings():
    assert flowdsl.parse("flow f {\n  input vector(dim=4)\n  butterfly\n}\n").graph.warnings == []
