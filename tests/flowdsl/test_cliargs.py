"""Validated command-line values and the exit code of usage errors."""

from __future__ import annotations

import argparse

import pytest

from flowdsl.cli import main
from flowdsl.cliargs import MAX_SEED, float_range, int_range, positive_float, seed


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400", "abc", ""])
def test_float_types_refuse_non_finite_and_garbage(text):
    with pytest.raises(argparse.ArgumentTypeError):
        positive_float()(text)


@pytest.mark.parametrize("text,ok", [("1e-3", True), ("0", False), ("-1", False), ("11", False), ("10", True)])
def test_positive_float_bounds(text, ok):
    parse = positive_float(maximum=10.0)
    if ok:
        assert parse(text) == float(text)
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


@pytest.mark.parametrize("text", ["-1", "1e23", "1.5", str(MAX_SEED + 1)])
def test_seed_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError):
        seed(text)


def test_seed_accepts_range_ends():
    assert seed("0") == 0 and seed(str(MAX_SEED)) == MAX_SEED


def test_int_and_float_range_messages_name_the_bound():
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
        int_range(1, 5)("0")
    with pytest.raises(argparse.ArgumentTypeError, match="at most 5"):
        float_range(0, 5)("6")


def test_usage_error_exits_1(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check"])  # missing FILE
    assert info.value.code == 1
    assert "usage:" in capsys.readouterr().err


def test_unknown_command_exits_1(capsys):
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 1
