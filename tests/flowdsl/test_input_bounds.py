"""Front-end input bounds: spec files are read with a limit (regular files only), long words in
comments and strings are not identifiers, and rendered errors never print control characters."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import flowdsl
from flowdsl.compiler.limits import LIMITS
from flowdsl.errors import FlowDSLError, ParseError, escape_controls
from flowdsl.parser import read_source

OK = "flow f { input vector(dim=2) prior gaussian }\n"


def test_long_word_in_comment_and_string_is_accepted():
    word = "w" * 300
    text = f'# {word}\nflow f {{ input vector(dim=2) # {word}\n train(data="{word}.npy") prior gaussian }}\n'
    spec = flowdsl.parse(text)
    assert spec.train.data == f"{word}.npy"


def test_long_identifier_is_still_refused_with_its_location():
    text = f'# "{"c" * 300}"\nflow f {{ input vector(dim=2) {"x" * 300} prior gaussian }}\n'
    with pytest.raises(ParseError, match="identifier longer than 256") as e:
        flowdsl.parse(text)
    assert (e.value.line, e.value.column) == (2, 30)


def test_control_characters_are_escaped_in_rendered_errors():
    err = FlowDSLError(
        "bad \x00 value \x07",
        filename="a\x1bb.flow",
        span=flowdsl.errors.Span(1, 3, 1, 4),
        source="ab\x07cd\n",
        notes=("note with \x00 and \x9b",),
    )
    text = err.render()
    assert not any(ord(c) < 32 and c != "\n" or 0x7F <= ord(c) < 0xA0 for c in text), repr(text)
    assert "\\x00" in text and "\\x07" in text and "\\x1b" in text and "\\x9b" in text
    # the printed source line keeps one character per column, so the caret stays under the BEL
    line, caret = text.splitlines()[1:3]
    assert line == "    ab\u2407cd" and caret == "      ^"
    assert escape_controls("tab\tand\nnewline") == "tab\tand\nnewline"


def test_nul_in_spec_renders_escaped():
    with pytest.raises(ParseError) as e:
        flowdsl.parse("flow f { input vector(dim=2) \x07 prior gaussian }")
    assert "\x07" not in str(e.value) and "\\x07" in str(e.value)


def test_read_source_refuses_devices_directories_and_fifos(tmp_path):
    with pytest.raises(ParseError, match="a device"):
        read_source("/dev/zero")
    with pytest.raises(ParseError, match="a directory"):
        read_source(tmp_path)
    fifo = tmp_path / "spec.flow"
    os.mkfifo(fifo)
    with pytest.raises(ParseError, match="FIFO"):  # would block forever if opened
        flowdsl.load(fifo)
    with pytest.raises(ParseError, match="cannot read spec file"):
        read_source(tmp_path / "missing.flow")


def test_read_source_reads_at_most_the_limit(tmp_path, monkeypatch):
    p = tmp_path / "big.flow"
    p.write_bytes(OK.encode() + b" " * 5000)
    monkeypatch.setattr(LIMITS, "max_source_bytes", 1000)
    with pytest.raises(ParseError, match="larger than the limit of 1,000 bytes"):
        flowdsl.load(p)
    with pytest.raises(ParseError, match="FLOWDSL_MAX_SOURCE_BYTES"):
        flowdsl.parse(b" " * 1001)
    monkeypatch.setattr(LIMITS, "max_source_bytes", 10_000)
    assert flowdsl.load(p).name == "f"


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_cli_check_and_train_do_not_hang_on_special_files(tmp_path, target):
    if target == "fifo":
        target = str(tmp_path / "s.flow")
        os.mkfifo(target)
    for cmd in (["check", target], ["train", target, "--steps", "1", "--out", str(tmp_path / "run")]):
        r = subprocess.run([sys.executable, "-m", "flowdsl", *cmd], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        assert "not a regular file" in r.stderr


def test_non_text_spec_is_a_parse_error():
    with pytest.raises(ParseError, match="str or bytes"):
        flowdsl.parse(123)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["a\x00b.flow", "x" * 5000 + ".flow", ""])
def test_odd_spec_paths_are_parse_errors(path):
    with pytest.raises(ParseError, match="cannot read spec file"):
        flowdsl.load(path)
