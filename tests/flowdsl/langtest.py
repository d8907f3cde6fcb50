"""Shared helpers for the layer-language tests: a compile error with its location and caret, a
bad argument rejected at its value, and the formatted glow_digits text the LSP tests point into
(imported by name: ``import langtest``, registered by tests/flowdsl/conftest.py)."""

from __future__ import annotations

import pytest

import flowdsl
from flowdsl.errors import CheckError, FlowDSLError

__all__ = ["located_error", "assert_rejected_at_value", "GLOW"]

# specs/glow_digits.flow as formatted by flowdsl fmt (a copy: the tests point into its text)
GLOW = """\
# Glow for scikit-learn's 8x8 digits: 1 channel, 17 grey levels (0..16).
# Two scales: squeeze to (4, 4, 4), four steps, split half the channels off, squeeze again.
block step(hidden=64) {
    actnorm
    conv1x1(param=lu)
    coupling(kind=affine, hidden=$hidden, net=conv, depth=2)
}

flow glow_digits {
    input image(channels=1, height=8, width=8, levels=17)
    dequantize uniform

    squeeze(factor=2)  # (1, 8, 8) -> (4, 4, 4)
    repeat 4 { step(hidden=64) }
    split              # (2, 4, 4) leave as latents of scale 0
    squeeze(factor=2)  # (2, 4, 4) -> (8, 2, 2)
    repeat 4 { step(hidden=64) }

    prior gaussian(learned=true)
    objective mle
    train(data=digits, batch=64, lr=1e-3, steps=3000, seed=0, weight_decay=1e-4, eval_every=250)
}
"""



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
