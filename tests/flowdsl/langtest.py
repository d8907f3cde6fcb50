"""Shared helpers for the layer-language tests: a compile error with its location and caret, and
a bad argument rejected at its value (imported by name: ``import langtest``, registered by
tests/flowdsl/conftest.py)."""

from __future__ import annotations

import pytest

import flowdsl
from flowdsl.errors import CheckError, FlowDSLError

__all__ = ["located_error", "assert_rejected_at_value"]


def located_error(text: str) -> FlowDSLError:
    """The FlowDSLError compiling ``text`` (as ``bad.flow``) raises; its message is located with a caret."""
    with pytest.raises(FlowDSLError) as info:
        flowdsl.compile(flowdsl.parse(text, filename="bad.flow"))
    e = info.value
    assert str(e).startswith(f"bad.flow:{e.line}:{e.column}: ") and "^" in str(e)
    return e


def assert_rejected_at_value(template: str, layer: str, arg: str, substring: str) -> None:
    """``layer`` (line 3 of ``template``, indented 2) is a CheckError located at the value of
    ``arg=`` whose message contains ``substring``."""
    e = located_error(template.format(layer=layer))
    assert isinstance(e, CheckError)
    column = 2 + layer.index(f"{arg}=") + len(arg) + 2  # the value, 1-based, after the 2-space indent
    assert (e.line, e.column) == (3, column), str(e)
    assert substring in str(e), str(e)
