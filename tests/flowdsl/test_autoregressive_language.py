"""``autoregressive(...)`` in the language: defaults, ranges, located rejections (images, spline-only
arguments, the sequential-pass limit) and the parameter count (/work/shared/dsl.md, "Version 1
additions")."""

from __future__ import annotations

import pytest

import flowdsl
from flowdsl.compiler.kinds import get_layer
from flowdsl.compiler.limits import LIMITS
from flowdsl.errors import CheckError, FlowDSLError

VEC = "flow t {{\n  input vector(dim=5)\n  {layer}\n}}\n"
IMG = "flow t {{\n  input image(channels=2, height=4, width=4)\n  {layer}\n}}\n"


def err(text: str) -> FlowDSLError:
    with pytest.raises(FlowDSLError) as info:
        flowdsl.compile(flowdsl.parse(text, filename="bad.flow"))
    e = info.value
    assert str(e).startswith(f"bad.flow:{e.line}:{e.column}: ") and "^" in str(e)
    return e


def test_the_reference_example_compiles_with_its_defaults():
    text = VEC.format(layer="autoregressive(kind=affine, hidden=64, depth=2, order=natural, seed=0, direction=forward)")
    model = flowdsl.compile(flowdsl.parse(text))
    kind = get_layer("autoregressive")
    assert kind.Args.model_validate({}, strict=False) == model.graph.node(model.graph.chain[0]).args.model_copy(
        update={"context": None}
    )


@pytest.mark.parametrize(
    "layer, arg, substring",
    [
        ("autoregressive(bins=4)", "bins", "'bins' belongs to kind=spline"),
        ("autoregressive(kind=affine, bound=3.0)", "bound", "'bound' belongs to kind=spline"),
        ("autoregressive(kind=spline, bins=1)", "bins", "greater than or equal to 2"),
        ("autoregressive(kind=spline, bound=0.0)", "bound", "greater than 0"),
        ("autoregressive(order=backwards)", "order", "order"),
        ("autoregressive(direction=reverse)", "direction", "direction"),
        ("autoregressive(kind=additive)", "kind", "kind"),
        ("autoregressive(hidden=0)", "hidden", "greater than or equal to 1"),
        ("autoregressive(depth=0)", "depth", "greater than or equal to 1"),
    ],
)
def test_bad_arguments_are_rejected_at_their_location(layer, arg, substring):
    e = err(VEC.format(layer=layer))
    assert isinstance(e, CheckError)
    column = 2 + layer.index(f"{arg}=") + len(arg) + 2  # the value, 1-based, after the 2-space indent
    assert (e.line, e.column) == (3, column), str(e)
    assert substring in str(e), str(e)


def test_images_are_rejected_at_the_layer():
    e = err(IMG.format(layer="autoregressive(kind=spline)"))
    assert isinstance(e, CheckError)
    assert (e.line, e.column) == (3, 3)
    assert "vector" in str(e) and "2×4×4" in str(e)


@pytest.mark.parametrize("direction, slow", [("forward", "inverse (sampling)"), ("inverse", "forward (density)")])
def test_the_sequential_passes_are_bounded_by_a_limit(direction, slow, monkeypatch):
    monkeypatch.setattr(LIMITS, "max_sequential_passes", 4)
    e = err(VEC.format(layer=f"autoregressive(direction={direction})"))
    assert (e.line, e.column) == (3, 3)
    assert f"5 sequential passes in the {slow} direction" in str(e)
    assert "FLOWDSL_MAX_SEQUENTIAL_PASSES" in str(e)
    monkeypatch.setattr(LIMITS, "max_sequential_passes", 5)
    flowdsl.compile(flowdsl.parse(VEC.format(layer=f"autoregressive(direction={direction})")))


@pytest.mark.parametrize("kind, bins, per_entry", [("affine", None, 2), ("spline", None, 23), ("spline", 3, 8)])
def test_param_count_is_the_dense_made(kind, bins, per_entry):
    """D = 5, hidden 7, depth 2: Linear(5→7) + Linear(7→7) + Linear(7→5·P)."""
    ak = get_layer("autoregressive")
    raw = {"kind": kind, "hidden": 7, "depth": 2} | ({"bins": bins} if bins else {})
    args = ak.Args.model_validate(raw, strict=False)
    assert ak.param_count(args, (5,)) == (5 * 7 + 7) + (7 * 7 + 7) + (7 * 5 * per_entry + 5 * per_entry)


def test_check_table_shows_the_spline_arguments_only_for_splines():
    ak = get_layer("autoregressive")
    spline = ak.shown_args(ak.Args.model_validate({"kind": "spline"}, strict=False), (5,))
    affine = ak.shown_args(ak.Args.model_validate({}, strict=False), (5,))
    assert (spline["bins"], spline["bound"]) == (8, 3.0)
    assert "bins" not in affine and "bound" not in affine
    assert affine["direction"] == "forward" and affine["order"] == "natural"
