"""``coupling(kind=spline, bins, bound)`` in the language: defaults, ranges and located rejections
(/work/shared/dsl.md, "Version 1 additions"), and the check table's arguments."""

from __future__ import annotations

import pytest
from langtest import assert_rejected_at_value

import flowdsl
from flowdsl.compiler.kinds import get_layer

VEC = "flow t {{\n  input vector(dim=4)\n  {layer}\n}}\n"
IMG = "flow t {{\n  input image(channels=2, height=4, width=4)\n  {layer}\n}}\n"


@pytest.mark.parametrize(
    "layer, arg, substring",
    [
        ("coupling(kind=spline, bins=1)", "bins", "greater than or equal to 2"),
        ("coupling(kind=spline, bound=0.0)", "bound", "greater than 0"),
        ("coupling(kind=spline, bound=-1.5)", "bound", "greater than 0"),
        ("coupling(kind=affine, bins=8)", "bins", "'bins' belongs to kind=spline"),
        ("coupling(kind=additive, bound=3.0)", "bound", "'bound' belongs to kind=spline"),
        ("coupling(bins=4)", "bins", "'bins' belongs to kind=spline"),
        ("coupling(kind=spline, bins=2.5)", "bins", "valid integer"),
        ("coupling(kind=splin)", "kind", "did you mean 'spline'"),
    ],
)
def test_bad_spline_arguments_are_rejected_at_their_location(layer, arg, substring):
    assert_rejected_at_value(VEC, layer, arg, substring)


def test_defaults_are_eight_bins_on_three():
    kind = get_layer("coupling")
    args = kind.Args.model_validate({"kind": "spline"}, strict=False)
    assert kind.spline(args) == (8, 3.0)
    shown = kind.shown_args(args, (4,))
    assert shown["bins"] == 8 and shown["bound"] == 3.0 and shown["net"] == "mlp"
    assert "bins" not in kind.shown_args(kind.Args.model_validate({}, strict=False), (4,))


@pytest.mark.parametrize("bins", [2, 8, 17])
def test_param_count_is_3k_minus_1_outputs_per_entry(bins):
    """An mlp channel coupling on 4 entries: 2 in, 2·(3K − 1) out, hidden 5, depth 1."""
    kind = get_layer("coupling")
    args = kind.Args.model_validate({"kind": "spline", "bins": bins, "hidden": 5, "depth": 1}, strict=False)
    assert kind.param_count(args, (4,)) == (2 * 5 + 5) + (5 * 2 * (3 * bins - 1) + 2 * (3 * bins - 1))


@pytest.mark.parametrize("layer", ["coupling(kind=spline, bound=3)", "coupling(kind=spline, bins=2, bound=1e-3)"])
def test_accepted_forms_compile(layer):
    model = flowdsl.compile(flowdsl.parse(IMG.format(layer=layer)))
    assert model.steps[0].is_spline
