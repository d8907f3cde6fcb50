"""The ``context`` statement and the conditional arguments in the language (issue 16,
/work/shared/dsl.md "Version 1 additions"): every rejection at its file:line:column with a caret,
the ``check`` output, ``fmt``, and the ``--explain`` dumps."""

from __future__ import annotations

import pytest

import flowdsl
from flowdsl.errors import CheckError, FlowDSLError
from flowdsl.fmt import format_source

IMG = "input image(channels=2, height=8, width=8, levels=17)"


def flow(*lines: str, inp: str = IMG) -> str:
    body = [inp, *lines] if inp else list(lines)
    return "flow t {\n" + "".join(f"    {line}\n" for line in body) + "}\n"


def err(text: str) -> FlowDSLError:
    with pytest.raises(FlowDSLError) as info:
        flowdsl.parse(text, filename="bad.flow")
    e = info.value
    assert str(e).startswith(f"bad.flow:{e.line}:{e.column}: ")
    assert "^" in str(e)
    return e


def at(text: str, line: int, needle: str) -> int:
    """1-based column of ``needle`` on 1-based ``line`` of ``text``."""
    return text.splitlines()[line - 1].index(needle) + 1


CASES = [
    # (id, lines, input, (line, needle), substring)
    ("unknown-kind", ["context lable(classes=10)", "coupling"], IMG, (3, "lable"), "did you mean 'label'"),
    ("unknown-kind-far", ["context zzz(classes=10)", "coupling"], IMG, (3, "zzz"), "label, vector, image"),
    ("unknown-arg", ["context label(clases=10)", "coupling"], IMG, (3, "clases"), "did you mean 'classes'"),
    (
        "missing-arg",
        ["context image(channels=1, height=4)", "coupling"],
        IMG,
        (3, "image"),
        "needs the argument 'width'",
    ),
    ("one-class", ["context label(classes=1)", "coupling"], IMG, (3, "1)"), "at least 2"),
    ("zero-dim", ["context vector(dim=0)", "coupling"], IMG, (3, "0)"), "at least 1"),
    ("float-dim", ["context vector(dim=2.5)", "coupling"], IMG, (3, "2.5"), "expected an integer"),
    ("bool-classes", ["context label(classes=true)", "coupling"], IMG, (3, "true"), "expected an integer"),
    (
        "second-context",
        ["context label(classes=10)", "context vector(dim=3)", "coupling"],
        IMG,
        (4, "context"),
        "duplicate 'context' statement (first on line 3)",
    ),
    (
        "before-input",
        ["context label(classes=10)", IMG, "coupling"],
        "",
        (2, "context"),
        "'context' comes after the flow's 'input'",
    ),
    (
        "in-repeat",
        ["repeat 2 { context label(classes=2) }", "coupling"],
        IMG,
        (3, "context"),
        "belongs in the flow body",
    ),
    ("context-true-without", ["coupling(context=true)"], IMG, (3, "true"), "context=true, but the flow declares no"),
    ("context-not-bool", ["context label(classes=3)", "coupling(context=1)"], IMG, (4, "1)"), "valid boolean"),
    (
        "conditional-without",
        ["coupling", "prior gaussian(learned=true, conditional=true)"],
        IMG,
        (4, "true)"),
        "conditional=true needs a context",
    ),
    (
        "laplace-conditional-without",
        ["coupling", "prior laplace(conditional=true)"],
        IMG,
        (4, "true"),
        "conditional=true needs a context",
    ),
    (
        "unused-opted-out",
        ["context vector(dim=3)", "coupling(context=false)", "prior gaussian(learned=true)"],
        IMG,
        (3, "context"),
        "nothing uses it",
    ),
    ("unused-no-reader", ["context label(classes=4)", "actnorm", "conv1x1"], IMG, (3, "context"), "nothing uses it"),
    (
        "image-does-not-divide",
        ["context image(channels=1, height=3, width=8)", "coupling"],
        IMG,
        (3, "3,"),
        "height 3 must equal the input's height 8 or divide it",
    ),
    (
        "image-larger",
        ["context image(channels=1, height=8, width=16)", "coupling"],
        IMG,
        (3, "16"),
        "width 16 must equal the input's width 8 or divide it",
    ),
    (
        "image-no-ratio-at-layer",
        ["context image(channels=1, height=4, width=4)", "squeeze", "coupling(hidden=4)"],
        "input image(channels=1, height=12, width=12, levels=17)",
        (5, "coupling"),
        "height 4 and this layer's height 6 are not integer multiples",
    ),
    (
        "image-no-ratio-at-written-context",
        ["context image(channels=1, height=4, width=4)", "squeeze", "coupling(hidden=4, context=true)"],
        "input image(channels=1, height=12, width=12, levels=17)",
        (5, "true"),
        "context=false",
    ),
    (
        "image-no-ratio-with-rg",
        [
            "context image(channels=1, height=4, width=4)",
            "squeeze",
            "rg(kernel=6) {",
            "    disentangler { coupling(hidden=4, mask=checkerboard) }",
            "    decimator { actnorm }",
            "}",
        ],
        "input image(channels=1, height=12, width=12, levels=17)",
        (6, "coupling"),
        "height 4 and the enclosing layer's height 6 are not integer multiples",
    ),
]


@pytest.mark.parametrize("name, lines, inp, where, substring", CASES, ids=[c[0] for c in CASES])
def test_context_rejections_are_located(name, lines, inp, where, substring):
    text = flow(*lines, inp=inp)
    e = err(text)
    assert isinstance(e, CheckError), type(e)
    assert substring in str(e), str(e)
    line, needle = where
    assert (e.line, e.column) == (line, at(text, line, needle)), str(e)


@pytest.mark.parametrize(
    "context",
    [
        "context image(channels=1, height=8, width=8)",
        "context image(channels=3, height=4, width=2)",
        "context image(channels=1, height=1, width=1)",
    ],
)
def test_image_contexts_that_fit_are_accepted(context):
    text = flow(context, "coupling(hidden=4)", "squeeze", "coupling(hidden=4)", "squeeze", "coupling(hidden=4)")
    s = flowdsl.parse(text)
    assert s.graph.context_nodes == ["coupling0", "coupling1", "coupling2"]


def test_image_contexts_inside_rg_bodies_are_checked_against_the_rg_image_not_the_patch():
    """rg resizes an image context to its own image and cuts it into the patches its bodies act on,
    so a 4×4 context fits an rg on 12×12 (ratio 3) although it has no ratio with the 6×6 patches."""
    text = flow(
        "context image(channels=1, height=4, width=4)",
        "rg(kernel=6) {",
        "    disentangler { coupling(hidden=4, mask=checkerboard) }",
        "    decimator { coupling(hidden=4, mask=checkerboard) }",
        "}",
        inp="input image(channels=1, height=12, width=12, levels=17)",
    )
    g = flowdsl.parse(text).graph
    assert len(g.context_nodes) == 4 and all(g.node(n).in_shape == (1, 6, 6) for n in g.context_nodes)


def test_label_and_vector_contexts_work_inside_rg_bodies():
    text = flow(
        "context label(classes=3)",
        "rg(kernel=4) {",
        "    disentangler { coupling(hidden=4, mask=checkerboard) }",
        "    decimator { coupling(hidden=4, mask=checkerboard, context=false) }",
        "}",
    )
    g = flowdsl.parse(text).graph
    assert g.context_nodes and all(".disentangler." in nid for nid in g.context_nodes)


def test_image_context_on_vector_data_is_accepted():
    text = flow("context image(channels=1, height=5, width=3)", "coupling(hidden=4)", inp="input vector(dim=4)")
    assert flowdsl.parse(text).graph.context_nodes == ["coupling0"]


def test_context_keyword_is_still_an_argument_name_and_rejects_as_a_block_name():
    e = err("block context() { actnorm }\n" + flow("coupling"))
    assert (e.line, e.column) == (1, 7) and "'context' is a keyword" in str(e)


# -- flowdsl check ---------------------------------------------------------------------------


def test_check_prints_the_context_and_where_it_enters(tmp_path, capsys):
    from flowdsl.cli import main

    path = tmp_path / "c.flow"
    path.write_text(
        flow(
            "context label(classes=10)",
            "coupling(hidden=4)",
            "coupling(hidden=4, context=false)",
            "prior gaussian(learned=true, conditional=true)",
        )
    )
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "context label(classes=10), shape (); enters coupling0 and the prior (gaussian)" in out
    assert "context=true" in out and "context=false" in out
    assert "in the context encoder" in out


def test_check_explain_dumps_show_the_context(tmp_path, capsys):
    from flowdsl.cli import main

    path = tmp_path / "c.flow"
    path.write_text(flow("context vector(dim=3)", "coupling(hidden=4)"))
    assert main(["check", "--explain", str(path)]) == 0
    out = capsys.readouterr().out
    expand = out.split("==== after pass: expand ")[1].split("==== after pass")[0]
    assert "context vector(dim=3)" in expand and "context=True" in expand
    for name in ("build_graph", "infer_shapes", "check"):
        dump = out.split(f"==== after pass: {name} ")[1].split("==== after pass")[0]
        assert "context vector(dim=3), shape (3); enters coupling0" in dump, name


def test_check_of_an_unconditional_spec_shows_no_context(tmp_path, capsys):
    from flowdsl.cli import main

    path = tmp_path / "c.flow"
    path.write_text(flow("coupling(hidden=4)"))
    assert main(["check", str(path)]) == 0
    assert "context" not in capsys.readouterr().out


# -- fmt -------------------------------------------------------------------------------------


def test_fmt_lays_out_the_context_statement_and_round_trips():
    messy = (
        "flow t{input image(channels=2,height=8,width=8,levels=17)\n"
        "context   image( channels=1 ,height=4,width=4 , )   # low resolution\n"
        "coupling( hidden=4,context = false ) coupling(hidden=4)}\n"
    )
    out = format_source(messy)
    assert "    context image(channels=1, height=4, width=4)  # low resolution\n" in out
    assert "    coupling(hidden=4, context=false)\n" in out
    assert format_source(out) == out
    a, b = flowdsl.parse(messy), flowdsl.parse(out)
    from flowdsl.compiler.canonical import architecture_sha256

    assert architecture_sha256(a) == architecture_sha256(b)
    assert a.context.shape == b.context.shape == (1, 4, 4)


def test_an_objective_that_cannot_train_conditional_flows_is_rejected_at_the_objective():
    text = flow("context label(classes=3)", "coupling(hidden=4)", "objective fdrl(steps=5)")
    e = err(text)
    assert "objective fdrl does not train conditional flows" in str(e) and "context label(classes=3)" in str(e)
    assert (e.line, e.column) == (5, at(text, 5, "fdrl"))
    # mle (also the default) trains them; fdrl without a context is unaffected
    assert flowdsl.parse(flow("context label(classes=3)", "coupling(hidden=4)", "objective mle")).context
    assert flowdsl.parse(flow("coupling(hidden=4)", "objective fdrl(steps=5)")).context is None


def test_a_context_without_any_input_reports_the_missing_input():
    e = err("flow t {\n    context label(classes=3)\n    coupling\n}\n")
    assert "has no 'input' statement" in str(e) and (e.line, e.column) == (1, 6)


def test_the_fuzzer_runs_conditional_seed_specs_with_a_context():
    from flowdsl.fuzz import check_input, seed_specs

    conditional = [s for s in seed_specs() if "context " in s]
    assert len(conditional) >= 2
    assert [check_input(s) for s in conditional] == ["compiled"] * len(conditional)
