"""The language server's features in process (no subprocess): completion on text that does not
parse, hover and navigation details, positions in UTF-16 units, the per-version cache."""

from __future__ import annotations

import re

import pytest
from langtest import GLOW
from lsprotocol import types as T

import flowdsl
from flowdsl.lsp import catalog
from flowdsl.lsp.analysis import DocumentStore, analyze, from_lsp_col, to_lsp_col
from flowdsl.lsp.completion import complete
from flowdsl.lsp.convert import diagnostics
from flowdsl.lsp.hover import hover
from flowdsl.lsp.symbols import definition, document_symbols, references

NESTED = """block inner(width=8) {
    coupling(hidden=$width, net=mlp)
}
block outer(w=16) {
    inner(width=$w)
    actnorm
}
flow f {
    input vector(dim=4)
    repeat 2 { outer(w=32) }
    outer
    inner()
}
"""


def labels_at(text: str, marker: str, after: bool = True) -> list[str]:
    """Completion labels with the cursor right after (or at) the first ``marker``."""
    i = text.index(marker) + (len(marker) if after else 0)
    line0 = text.count("\n", 0, i)
    col0 = i - (text.rfind("\n", 0, i) + 1)
    return [c.label for c in complete(text, line0, col0)]


def test_catalog_reads_the_registry_models():
    coupling = {a.name: a for a in catalog.layer_args("coupling")}
    assert coupling["kind"].default == "affine" and coupling["kind"].choices == ("affine", "additive", "spline")
    assert coupling["hidden"].default == "512" and coupling["net"].choices == ("conv", "resnet", "mlp")
    assert [a.signature() for a in catalog.layer_args("conv1x1")] == ["param=lu"]
    assert {a.name: a.choices for a in catalog.prior_args("gaussian")} == {
        "learned": ("true", "false"),
        "conditional": ("true", "false"),
    }
    assert coupling["context"].choices == ("true", "false") and coupling["context"].default == "auto"
    assert [a.name for a in catalog.context_args("image")] == ["channels", "height", "width"]
    assert catalog.context_args("nosuch") is None
    assert [a.name for a in catalog.input_args("image")] == ["channels", "height", "width", "levels"]
    assert catalog.layer_args("nosuch") is None
    assert set(catalog.layer_names()) >= {"actnorm", "conv1x1", "conv", "coupling", "squeeze", "split", "rg"}


@pytest.mark.parametrize(
    "text, marker, expected",
    [
        (GLOW.replace("conv1x1(param=lu)", "conv1x1("), "conv1x1(", ["param"]),
        (GLOW.replace("conv1x1(param=lu)", "conv1x1(param="), "conv1x1(param=", ["lu", "qr", "plain", "$hidden"]),
        (GLOW.replace("conv1x1(param=lu)", "conv1x1(param=q"), "conv1x1(param=q", ["lu", "qr", "plain", "$hidden"]),
        (
            GLOW.replace("conv1x1(param=lu)", "coupling(net=mlp, "),
            "net=mlp, ",
            ["kind", "hidden", "depth", "mask", "bins", "bound", "context"],
        ),
        (GLOW.replace("conv1x1(param=lu)", "conv(kind="), "conv(kind=", ["emerging", "periodic", "$hidden"]),
        (GLOW.replace("hidden=$hidden", "hidden=$"), "hidden=$", ["$hidden"]),
        (
            GLOW.replace("prior gaussian(learned=true)", "prior laplace("),
            "prior laplace(",
            ["scale", "learned", "conditional"],
        ),
        (GLOW.replace("conv1x1(param=lu)", "coupling(context="), "coupling(context=", ["true", "false", "$hidden"]),
        (GLOW.replace("    dequantize uniform", "    context "), "    context ", ["label", "vector", "image"]),
        (
            GLOW.replace("    dequantize uniform", "    context image("),
            "context image(",
            ["channels", "height", "width"],
        ),
        (GLOW.replace("    dequantize uniform", "    context label(cl"), "context label(cl", ["classes"]),
        (GLOW.replace("prior gaussian(learned=true)", "prior gaussian(learned="), "learned=", ["true", "false"]),
        (GLOW.replace("objective mle", "objective fdrl(loss="), "fdrl(loss=", ["lr", "lsif"]),
        (GLOW.replace("objective mle", "objective fdrl(divergence=kl, "), "kl, ", None),
        (GLOW.replace("    dequantize uniform", "    dequantize "), "    dequantize ", ["uniform", "none"]),
        (GLOW.replace("    input image", "    input \n    image"), "    input ", ["image", "vector"]),
        (GLOW.replace(", levels=17)", ", le)"), "width=8, le", ["levels"]),
        (GLOW.replace("repeat 4 { step(hidden=64) }\n    split", "repeat 4 { step(\n    split"), "{ step(", ["hidden"]),
        (GLOW.replace("objective mle", "objective fdrl(estimator=resnet("), "resnet(", []),
        (GLOW, "# Glow for", []),  # in a comment
        (GLOW.replace('data=digits', 'data="a(b'), 'data="a(', []),  # in a string
    ],
)
def test_completion_on_the_line_being_typed(text, marker, expected):
    got = labels_at(text, marker)
    if expected is None:  # the fdrl arguments not given yet
        assert set(got) == {"loss", "estimator", "steps", "step_size", "noise", "source"}
    else:
        assert got == expected


def test_completion_where_a_statement_starts():
    in_flow = set(labels_at(GLOW, "    objective mle\n    "))
    assert {"actnorm", "coupling", "rg", "step", "repeat", "prior", "train", "context"} <= in_flow
    assert {"prior laplace", "objective mle"} <= in_flow
    in_block = set(labels_at(GLOW, "    actnorm\n    "))
    assert {"actnorm", "coupling", "step", "repeat"} <= in_block
    assert not in_block & {"prior", "train", "input", "context", "prior laplace", "objective mle"}
    after_brace = set(labels_at(GLOW, "repeat 4 { "))
    assert "step" in after_brace and "squeeze" in after_brace


def test_completion_outside_a_block_offers_no_parameters():
    text = GLOW.replace("squeeze(factor=2)  # (2", "squeeze(factor=$")
    assert labels_at(text, "squeeze(factor=$") == []


def test_hover_follows_a_parameter_through_blocks():
    an = analyze(NESTED, "n.flow")
    assert an.error is None, an.error
    lines = NESTED.split("\n")
    h = hover(an, 1, lines[1].index("$width") + 1).contents.value
    # instances: 2 from the repeat (w=32), one from `outer` (w default 16), one from inner() (8)
    assert [int(v) for v in re.findall(r"`coupling\d`: hidden=(\d+)", h)] == [32, 32, 16, 8]
    assert "32 — line 5 in block outer ← $w at line 10 (×2)" in h
    assert "16 — line 5 in block outer ← $w at line 11, the default" in h
    assert "8 — line 12, the default" in h
    sig = hover(an, 9, lines[9].index("outer") + 1).contents.value
    assert "block outer(w=16)" in sig and "2 calls" in sig


def test_hover_on_prior_and_objective_and_nothing():
    an = analyze(GLOW, "g.flow")
    lines = GLOW.split("\n")
    row = next(i for i, line in enumerate(lines) if "prior gaussian" in line)
    text = hover(an, row, lines[row].index("gaussian") + 1).contents.value
    assert "prior gaussian" in text and "`learned=false` (true | false)" in text
    assert hover(an, row, 0) is None  # whitespace
    assert hover(an, 0, 3) is None  # a comment's word names nothing


CGLOW = GLOW.replace("    dequantize uniform", "    context label(classes=10)\n    dequantize uniform").replace(
    "prior gaussian(learned=true)", "prior gaussian(learned=true, conditional=true)"
)


def test_hover_on_the_context_statement_shows_its_shape_and_where_it_enters():
    an = analyze(CGLOW, "c.flow")
    assert an.error is None, an.error
    lines = CGLOW.split("\n")
    row = next(i for i, line in enumerate(lines) if "context label" in line)
    for word in ("context", "label"):
        text = hover(an, row, lines[row].index(word) + 1).contents.value
        assert "**context label**" in text and "0…K−1" in text
        assert "**shape** per example: `()`" in text
        assert "the prior `gaussian`" in text
        assert re.findall(r"`(coupling\d)`", text) == [f"coupling{i}" for i in range(8)]  # the eight steps
    vec = analyze(CGLOW.replace("label(classes=10)", "vector(dim=3)"), "v.flow")
    text = hover(vec, row, lines[row].index("context") + 1).contents.value
    assert "**shape** per example: `(3)`" in text and "**context vector**" in text
    # the coupling's own hover lists the context argument
    row = next(i for i, line in enumerate(lines) if "coupling(kind=affine" in line)
    text = hover(an, row, lines[row].index("coupling") + 1).contents.value
    assert "`context=auto` (true | false)" in text


def test_hover_uses_the_last_good_graph_while_the_text_is_broken():
    store = DocumentStore()
    store.analysis("u", GLOW, "g.flow", 1)
    broken = GLOW.replace("objective mle", "objective mle(")
    cur = store.analysis("u", broken, "g.flow", 2)
    assert cur.error is not None and cur.tree is None and cur.graph is None
    assert store.with_tree("u").version == 1
    assert store.analysis("u", broken, "g.flow", 2) is cur  # cached by version
    lines = GLOW.split("\n")
    row = next(i for i, line in enumerate(lines) if "conv1x1" in line)
    text = hover(store.with_tree("u"), row, 6).contents.value
    assert "8 instances" in text


def test_definition_references_and_symbols_of_nested_blocks():
    an = analyze(NESTED, "n.flow")
    lines = NESTED.split("\n")
    loc = definition(an, "file:///n.flow", 4, lines[4].index("inner") + 1)
    assert (loc.range.start.line, loc.range.start.character, loc.range.end.character) == (0, 6, 11)
    loc = definition(an, "file:///n.flow", 4, lines[4].index("$w") + 1)  # $w -> the parameter w
    assert (loc.range.start.line, loc.range.start.character, loc.range.end.character) == (3, 12, 13)
    refs = references(an, "file:///n.flow", 0, 7, include_declaration=False)
    assert [(r.range.start.line, r.range.start.character) for r in refs] == [(4, 4), (11, 4)]
    assert definition(an, "file:///n.flow", 5, 6) is None  # actnorm is a layer, not a block
    syms = document_symbols(an)
    assert [s.name for s in syms] == ["inner", "outer", "f"]
    assert syms[1].detail == "block outer(w=16)" and [c.name for c in syms[2].children] == ["repeat 2"]
    assert (syms[2].range.start.line, syms[2].range.end.line) == (7, 12)


def test_positions_count_utf16_units():
    line = 'a"😀"b'
    assert to_lsp_col(line, 4) == 5 and from_lsp_col(line, 5) == 4 and to_lsp_col("abc", 2) == 2
    text = GLOW.replace("train(data=digits, batch=64", 'train(data="😀", batch=0')
    an = analyze(text, "u.flow")
    (d,) = diagnostics(an)
    err = pytest.raises(flowdsl.FlowDSLError, flowdsl.parse, text)
    assert err.value.span.column == text.split("\n")[err.value.line - 1].index("0, lr") + 1
    assert d.range.start.character == err.value.span.column - 1 + 1  # the emoji is 2 UTF-16 units
    assert d.message == err.value.message and d.severity == T.DiagnosticSeverity.Error


def test_hover_shows_shapes_as_far_as_the_checker_got():
    last = "    repeat 4 { step(hidden=64) }\n\n"
    text = GLOW.replace(last, last[:-1] + "    squeeze(factor=3)\n\n")
    an = analyze(text, "g.flow")
    assert an.error is not None and an.graph is None and "factor 3 does not divide" in an.error.message
    lines = text.split("\n")
    first = lines.index("    squeeze(factor=2)  # (1, 8, 8) -> (4, 4, 4)")
    h = hover(an, first, 6).contents.value
    assert "(1, 8, 8) → (4, 4, 4)" in h and "as far as the checker got" in h
    bad = lines.index("    squeeze(factor=3)")
    assert "(8, 2, 2) → ?" in hover(an, bad, 6).contents.value  # the failing layer: its input only


def test_inlay_hints_up_to_a_failing_layer_and_none_without_a_tree():
    from flowdsl.lsp.symbols import inlay_hints

    whole = T.Range(start=T.Position(0, 0), end=T.Position(99, 0))
    last = "    repeat 4 { step(hidden=64) }\n\n"
    text = GLOW.replace(last, last[:-1] + "    squeeze(factor=3)\n\n")
    an = analyze(text, "g.flow")
    hints = {h.position.line: h.label for h in inlay_hints(an, whole)}
    lines = text.split("\n")
    assert hints[lines.index("    squeeze(factor=2)  # (1, 8, 8) -> (4, 4, 4)")] == "→ (4, 4, 4)"
    assert hints[lines.index("    squeeze(factor=2)  # (2, 4, 4) -> (8, 2, 2)")] == "→ (8, 2, 2)"
    assert lines.index("    squeeze(factor=3)") not in hints  # the failing layer: no output shape
    assert inlay_hints(analyze(GLOW.replace("objective mle", "objective mle("), "g.flow"), whole) == []
