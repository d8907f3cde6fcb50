"""The composite-layer syntax is generic: ``NAME(args) { part { ... } ... }`` for any kind with
``bodies``; which parts exist is the kind's business, checked with a location and a suggestion."""

from __future__ import annotations

import pytest

import flowdsl
from flowdsl.compiler import registry
from flowdsl.compiler.registry import ArgsModel, BodyInstance, LayerKind
from flowdsl.errors import CheckError

IMG = "flow f {{\n  input image(channels=1, height=8, width=8)\n  {stmt}\n}}\n"


def err(stmt: str) -> CheckError:
    with pytest.raises(CheckError) as info:
        flowdsl.parse(IMG.format(stmt=stmt), filename="c.flow")
    return info.value


@pytest.mark.parametrize(
    "stmt,col,message",
    [
        ("rg(kernel=2) { decimtor { actnorm } }", 18, "unknown part 'decimtor' of rg (did you mean 'decimator'?)"),
        ("rg(kernel=2) { foo { actnorm } }", 18, "unknown part 'foo' of rg; rg takes disentangler, decimator"),
        ("rg(kernel=2)", 3, "'rg' needs a body: rg(...) { disentangler { ... } decimator { ... } }"),
        ("actnorm { x { actnorm } }", 3, "'actnorm' takes no body"),
        ("rg(kernel=2) { decimator { actnorm } decimator { actnorm } }", 40, "duplicate 'decimator' in rg"),
        ("rg { decimator { prior gaussian } }", 20, "'prior' belongs in the flow body"),
    ],
)
def test_composite_errors_are_located(stmt, col, message):
    e = err(stmt)
    assert (e.line, e.column) == (3, col), str(e)
    assert message in str(e)


def test_a_new_composite_kind_needs_no_grammar_change():
    """A kind registered at run time with its own part names is written with the same syntax."""

    class Twice(LayerKind):
        name = "twice_for_test"
        bodies = ("first", "second")

        class Args(ArgsModel):
            pass

        @classmethod
        def body_instances(cls, args, shape, ctx):
            return [BodyInstance(part, part, tuple(shape)) for part in cls.bodies]

    registry.register_layer(Twice)
    try:
        spec = flowdsl.parse(IMG.format(stmt="twice_for_test { second { actnorm } first { actnorm conv1x1 } }"))
        (layer,) = spec.layers
        assert layer.kind == "twice_for_test" and set(layer.bodies) == {"first", "second"}
        assert [c.kind for c in layer.bodies["first"]] == ["actnorm", "conv1x1"]
        labels = {n.body_label for n in spec.graph.layers() if n.parent}
        assert labels == {"first", "second"}
        e = err("twice_for_test { thrid { actnorm } }")
        assert "unknown part 'thrid' of twice_for_test; twice_for_test takes first, second" in str(e)
    finally:
        registry._LAYERS.pop("twice_for_test", None)
