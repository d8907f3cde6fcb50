"""How a located error is displayed: the source line, and a caret under the offending token."""

from __future__ import annotations

import subprocess
import sys

import pytest

import flowdsl
from flowdsl.errors import FlowDSLError


def err(text) -> FlowDSLError:
    with pytest.raises(FlowDSLError) as info:
        flowdsl.parse(text, filename="bad.flow")
    e = info.value
    assert str(e).startswith(f"bad.flow:{e.line}:{e.column}: error: ")
    return e


def caret(e: FlowDSLError) -> tuple[str, int, int]:
    """(printed source line without its 4-space indent, caret index into it, caret width)."""
    lines = str(e).splitlines()
    src, mark = lines[1][4:], lines[2][4:]
    i = mark.index("^")
    return src, i, len(mark) - i


def test_caret_lines_up_under_a_token_after_tabs():
    e = err("flow f {\n\tinput vector(dim=4)\n\t\tactnrom\n}\n")
    assert (e.line, e.column) == (3, 3)
    src, i, width = caret(e)
    assert "\t" not in src
    assert src[i : i + width] == "actnrom"


def test_caret_lines_up_with_tabs_mixed_with_spaces():
    e = err("flow f {\n\tinput vector(dim=4)\n  \t actnorm x\t@\n}\n")
    assert (e.line, e.column) == (3, 15) and "unexpected character '@'" in e.message
    src, i, width = caret(e)
    assert src[i] == "@" and width == 1


def test_caret_without_tabs_is_unchanged():
    e = err("flow f {\n  input vector(dim=4)\n  actnrom\n}\n")
    src, i, width = caret(e)
    assert (e.line, e.column) == (3, 3) and src[i : i + width] == "actnrom" and i == 2


def test_empty_file_has_a_source_line_and_caret():
    e = err("")
    assert (e.line, e.column) == (1, 1)
    assert "unexpected end of file" in e.message
    lines = str(e).splitlines()
    assert lines[1] == "    (empty file)"
    assert lines[2] == "    ^"


def test_comment_only_file_has_a_caret_after_the_comment():
    e = err("# only a comment\n")
    src, i, _ = caret(e)
    assert src == "# only a comment" and i == len(src) and (e.line, e.column) == (1, 17)


def test_cli_check_empty_file(tmp_path):
    f = tmp_path / "e.flow"
    f.write_bytes(b"")
    out = subprocess.run([sys.executable, "-m", "flowdsl", "check", str(f)], capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{f}:1:1: error: unexpected end of file" in out.stderr
    assert "    (empty file)\n    ^" in out.stderr


def test_check_table_shows_the_resolved_default_net():
    vec = flowdsl.parse("flow f {\n  input vector(dim=4)\n  coupling\n}\n")
    img = flowdsl.parse("flow f {\n  input image(channels=2, height=4, width=4)\n  coupling\n}\n")
    assert "net=mlp" in vec.graph.format() and "net=None" not in vec.graph.format()
    assert "net=conv" in img.graph.format() and "net=None" not in img.graph.format()
    # the written value is kept as is
    assert (
        "net=resnet"
        in flowdsl.parse(
            "flow f {\n  input image(channels=2, height=4, width=4)\n  coupling(net=resnet)\n}\n"
        ).graph.format()
    )


def test_cli_check_table_shows_net_mlp_on_vectors(tmp_path):
    f = tmp_path / "v.flow"
    f.write_text("flow f {\n  input vector(dim=4)\n  coupling\n}\n")
    out = subprocess.run([sys.executable, "-m", "flowdsl", "check", str(f)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "net=mlp" in out.stdout and "net=None" not in out.stdout


@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes", "str"])
def test_leading_utf8_bom_is_accepted_and_line_1_columns_stay_right(as_bytes):
    text = "\ufeffflow f { input vector(dim=4) coupling }\n"
    spec = flowdsl.parse(text.encode("utf-8") if as_bytes else text)
    assert spec.name == "f"
    bad = "\ufeffflow f { input vector(dim=4) actnrom }\n"
    e = err(bad.encode("utf-8") if as_bytes else bad)
    assert (e.line, e.column) == (1, bad.index("actnrom")), str(e)  # index counts the BOM: it is not a column
    src, i, width = caret(e)
    assert src == bad[1:].rstrip("\n") and src[i : i + width] == "actnrom"


@pytest.mark.parametrize("sep", ["\x0b", "\x0c", "\r", "\u2028"], ids=["vt", "ff", "cr", "u2028"])
def test_shown_line_is_the_line_the_location_counts(sep):
    e = err(f"# a{sep}comment\nflow t {{\n  input vector(dim=2)\n  actnrom\n}}\n")
    assert (e.line, e.column) == (4, 3)
    src, i, width = caret(e)
    assert src[i : i + width] == "actnrom", str(e)
