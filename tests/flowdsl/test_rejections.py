"""Every class of the language reference's rejection list raises a FlowDSLError at the right line and column."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import flowdsl
from flowdsl.errors import CheckError, FlowDSLError, NotAvailableError, ParseError

IMG = "input image(channels=1, height=8, width=8, levels=17)"


def flow(body: str, blocks: str = "") -> str:
    return textwrap.dedent(blocks) + "flow t {\n    " + IMG + "\n" + textwrap.dedent(body) + "}\n"


def err(text: str) -> FlowDSLError:
    with pytest.raises(FlowDSLError) as info:
        flowdsl.compile(flowdsl.parse(text, filename="bad.flow"))
    e = info.value
    assert str(e).startswith(f"bad.flow:{e.line}:{e.column}: ")
    assert "^" in str(e)
    return e


CASES = [
    # (id, text, line, column, class, substring)
    ("syntax", flow("actnorm )\n"), 3, 9, ParseError, "unexpected ')'"),
    ("syntax-eof", "flow t {\n  " + IMG + "\n  actnorm\n", 3, 10, ParseError, "end of file"),
    ("bad-char", flow("actnorm @\n"), 3, 9, ParseError, "unexpected character '@'"),
    ("unknown-layer", flow("actnrom\n"), 3, 1, CheckError, "did you mean 'actnorm'"),
    ("unknown-block", flow("stepp()\n", "block step() { actnorm }\n"), 4, 1, CheckError, "did you mean 'step'"),
    ("unknown-arg", flow("coupling(hiden=8)\n"), 3, 10, CheckError, "did you mean 'hidden'"),
    ("unknown-enum", flow("conv1x1(param=qrr)\n"), 3, 15, CheckError, "did you mean 'qr'"),
    ("unknown-prior", flow("prior gausian\n"), 3, 7, CheckError, "did you mean 'gaussian'"),
    ("unknown-objective", flow("objective ml\n"), 3, 11, CheckError, "did you mean 'mle'"),
    ("unknown-train-arg", flow("train(stpes=3)\n"), 3, 7, CheckError, "did you mean 'steps'"),
    ("wrong-type", flow("coupling(hidden=1.5)\n"), 3, 17, CheckError, "valid integer"),
    ("wrong-type-bool", flow("prior gaussian(learned=3)\n"), 3, 24, CheckError, "valid boolean"),
    ("out-of-range", flow("coupling(hidden=0)\n"), 3, 17, CheckError, "greater than or equal to 1"),
    (
        "negative-levels",
        "flow t { input image(channels=1, height=8, width=8, levels=1) }",
        1,
        60,
        CheckError,
        "at least 2",
    ),
    ("squeeze-divide", flow("squeeze(factor=3)\n"), 3, 16, CheckError, "does not divide"),
    ("split-one-channel", flow("split\n"), 3, 1, CheckError, "cannot split"),
    ("coupling-one-channel", flow("coupling(mask=channel)\n"), 3, 15, CheckError, "at least 2 channels"),
    ("spatial-on-vector", "flow t {\n  input vector(dim=4)\n  squeeze\n}", 3, 3, CheckError, "needs image data"),
    ("conv-net-on-vector", "flow t {\n  input vector(dim=4)\n  coupling(net=conv)\n}", 3, 16, CheckError, "net=mlp"),
    (
        "recursion",
        flow("a()\n", "block a() { b() }\nblock b() { a() }\n"),
        2,
        13,
        CheckError,
        "recursion among blocks: a -> b -> a",
    ),
    ("self-recursion", flow("a()\n", "block a() { actnorm a() }\n"), 1, 21, CheckError, "recursion"),
    ("missing-input", "flow t {\n  actnorm\n}", 1, 6, CheckError, "no 'input'"),
    ("duplicate-input", flow("input vector(dim=3)\n"), 3, 1, CheckError, "duplicate 'input'"),
    ("duplicate-prior", flow("prior gaussian\nprior laplace\n"), 4, 1, CheckError, "duplicate 'prior'"),
    ("objective-pairing", flow("objective fdrl(loss=lsif, divergence=kl)\n"), 3, 38, CheckError, "does not go with"),
    ("objective-needs-flow", flow("objective fdrl(source=prior)\n"), 3, 23, CheckError, "needs layers"),
    ("unknown-param-ref", flow("coupling(hidden=$h)\n"), 3, 17, CheckError, "unknown parameter '$h'"),
    (
        "block-missing-arg",
        flow("s()\n", "block s(h) { coupling(hidden=$h) }\n"),
        4,
        1,
        CheckError,
        "needs the argument 'h'",
    ),
    (
        "block-unknown-arg",
        flow("s(hx=3)\n", "block s(h=2) { coupling(hidden=$h) }\n"),
        4,
        3,
        CheckError,
        "did you mean 'h'",
    ),
    ("positional-arg", flow("coupling(8)\n"), 3, 10, CheckError, "must be named"),
    ("duplicate-arg", flow("coupling(hidden=8, hidden=9)\n"), 3, 20, CheckError, "given twice"),
    ("repeat-count", flow("repeat 2.5 { actnorm }\n"), 3, 8, CheckError, "positive integer"),
    ("repeat-zero", flow("repeat 0 { actnorm }\n"), 3, 8, CheckError, "at least 1"),
    (
        "duplicate-block",
        flow("a()\n", "block a() { actnorm }\nblock a() { actnorm }\n"),
        2,
        7,
        CheckError,
        "defined twice",
    ),
    ("dequantize-vector", "flow t {\n  input vector(dim=4)\n  dequantize uniform\n}", 3, 14, CheckError, "discrete"),
    (
        "input-missing-arg",
        "flow t {\n  input image(channels=1, height=8)\n}",
        2,
        9,
        CheckError,
        "needs the argument 'width'",
    ),
    ("input-kind", "flow t {\n  input tensor(dim=3)\n}", 2, 9, CheckError, "unknown input kind"),
    ("keyword-as-block", "block flow() { actnorm }\nflow t { input vector(dim=2) }", 1, 7, CheckError, "keyword"),
    (
        "input-inside-block",
        flow("b()\n", "block b() { input vector(dim=2) }\n"),
        1,
        13,
        CheckError,
        "belongs in the flow body",
    ),
    ("non-utf8", b"flow t {\n  input vector(dim=2) \xff\n}", 2, 23, ParseError, "not UTF-8"),
]


@pytest.mark.parametrize("name,text,line,col,cls,sub", CASES, ids=[c[0] for c in CASES])
def test_rejection_is_located(name, text, line, col, cls, sub):
    e = err(text)
    assert isinstance(e, cls), f"{type(e).__name__}: {e}"
    assert (e.line, e.column) == (line, col), str(e)
    assert sub in str(e), str(e)
    assert e.filename == "bad.flow"


def test_fdrl_parses_and_its_arguments_are_checked():
    from flowdsl.compiler.kinds import get_objective

    assert get_objective("fdrl") is not None
    spec = flowdsl.parse(flow("objective fdrl(loss=lr, divergence=js)\n"), filename="ok.flow")
    args = spec.objective.args
    assert spec.objective.name == "fdrl" and (args.loss, args.divergence) == ("lr", "js")
    stmt = "objective fdrl(loss=lr, divergence=jss)"
    e = err(flow(stmt + "\n"))
    assert isinstance(e, CheckError) and not isinstance(e, NotAvailableError), str(e)
    assert (e.line, e.column) == (3, stmt.index("jss") + 1) and "did you mean 'js'" in str(e), str(e)


def test_dimension_change_is_rejected():
    """A kind whose shape rule changes the dimension count is rejected by the generic check."""
    from flowdsl.compiler import registry
    from flowdsl.compiler.registry import ArgsModel, LayerKind

    class Bad(LayerKind):
        name = "bad_resize_for_test"

        class Args(ArgsModel):
            pass

        @classmethod
        def infer_shape(cls, args, shape, ctx):
            return (shape[0] * 2, *shape[1:])

    registry.register_layer(Bad)
    try:
        e = err(flow("actnorm\nbad_resize_for_test\n"))
        assert (e.line, e.column) == (4, 1) and "number of dimensions" in str(e)
    finally:
        registry._LAYERS.pop("bad_resize_for_test", None)


def test_caret_points_at_the_column():
    e = err(flow("coupling(hiden=8)\n"))
    lines = str(e).splitlines()
    assert lines[1].strip() == "coupling(hiden=8)"
    assert lines[2].index("^") - 4 == e.column - 1


def test_cli_check_prints_located_message_without_traceback(tmp_path):
    bad = tmp_path / "bad.flow"
    bad.write_text(flow("squeeze(factor=3)\n"))
    out = subprocess.run([sys.executable, "-m", "flowdsl", "check", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert f"{bad}:3:16: error:" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    syntax = tmp_path / "syn.flow"
    syntax.write_text("flow t { input vector(dim=2) actnorm ) }")
    out = subprocess.run([sys.executable, "-m", "flowdsl", "check", str(syntax)], capture_output=True, text=True)
    assert out.returncode == 1 and ":1:38: error: unexpected ')'" in out.stderr and "Traceback" not in out.stderr


def _caret_text(e: FlowDSLError) -> str:
    """The text of the printed source line under the caret and its tildes."""
    lines = str(e).splitlines()
    src, mark = lines[1][4:], lines[2][4:]
    i = mark.index("^")
    return src[i : len(mark)]


BLOCK_ORIGIN_CASES = [
    # (id, blocks, body, line, column, token under the caret, via text)
    (
        "argument",
        "block st(h=8) { coupling(hidden=$h) }\n",
        "st(h=2.5)\n",
        4,
        6,
        "2.5",
        "via block st's parameter h, used at line 1",
    ),
    (
        "default",
        "block st(h=8.5) { coupling(hidden=$h) }\n",
        "st()\n",
        1,
        12,
        "8.5",
        "via the default of block st's parameter h, used at line 1",
    ),
    (
        "conv-kernel",
        "block b(k=3) { conv(kernel=$k) }\n",
        "b(k=2.0)\n",
        4,
        5,
        "2.0",
        "via block b's parameter k, used at line 1",
    ),
    (
        "nested",
        "block b(k=3) { conv(kernel=$k) }\nblock a(h=3) {\n  b(k=$h)\n}\n",
        "a(h=2.0)\n",
        7,
        5,
        "2.0",
        "via block b's parameter k, from block a's parameter h, used at line 1",
    ),
]


@pytest.mark.parametrize(
    "name,blocks,body,line,col,token,via", BLOCK_ORIGIN_CASES, ids=[c[0] for c in BLOCK_ORIGIN_CASES]
)
def test_wrong_typed_block_argument_is_reported_where_the_value_is_written(name, blocks, body, line, col, token, via):
    e = err(flow(body, blocks))
    assert isinstance(e, CheckError)
    assert (e.line, e.column) == (line, col), str(e)
    assert _caret_text(e) == token, str(e)
    assert via in e.message and "valid integer" in e.message, str(e)


ESTIMATOR_CASES = [
    # (id, estimator as written, token under the caret, substring of the message)
    (
        "unknown-arg",
        "resnet(hiden=8)",
        "hiden",
        "unknown argument 'hiden' for estimator resnet (did you mean 'hidden'?)",
    ),
    ("unknown-name", "resnett(hidden=8)", "resnett", "unknown estimator 'resnett' (did you mean 'resnet'?)"),
    ("unknown-bare-name", "resnett", "resnett", "unknown estimator 'resnett' (did you mean 'resnet'?)"),
    ("unknown-far-name", "foo(x=1)", "foo", "unknown estimator 'foo'; use one of resnet, convnet, mlp"),
    ("value-name", "resnet(hidden=abc)", "abc", "'hidden' of resnet must be a positive integer, got abc"),
    ("value-float", "resnet(blocks=2.5)", "2.5", "'blocks' of resnet must be a positive integer, got 2.5"),
]


@pytest.mark.parametrize("name,est,token,sub", ESTIMATOR_CASES, ids=[c[0] for c in ESTIMATOR_CASES])
def test_fdrl_estimator_errors_point_inside_the_call(name, est, token, sub):
    stmt = f"objective fdrl(estimator={est})"
    e = err(flow(stmt + "\n"))
    assert isinstance(e, CheckError)
    assert (e.line, e.column) == (3, stmt.index(token, len("objective fdrl(estimator=")) + 1), str(e)
    assert _caret_text(e) == token, str(e)
    assert sub in e.message, str(e)
    assert "Value error" not in str(e)


def test_no_pydantic_prefix_in_messages():
    for text in (flow("objective fdrl(estimator=3)\n"), flow("coupling(kind=affin)\n"), flow("train(lr=abc)\n")):
        e = err(text)
        assert "Value error" not in str(e) and "Assertion failed" not in str(e), str(e)


@pytest.mark.parametrize(
    "layer,col,sub", [("coupling", 3, "at least 2 entries"), ("split", 3, "cannot split a vector with 1 entry")]
)
def test_one_entry_vector_messages_do_not_suggest_squeeze(layer, col, sub):
    e = err(f"flow t {{\n  input vector(dim=1)\n  {layer}\n}}\n")
    assert (e.line, e.column) == (3, col) and _caret_text(e) == layer, str(e)
    assert sub in e.message and "entrys" not in e.message, str(e)
    assert "squeeze" not in e.message and "checkerboard" not in e.message, str(e)


def test_parameter_reference_in_a_block_default_says_where_it_is():
    e = err(flow("a()\n", "block a(h=$x) { coupling(hidden=$h) }\n"))
    assert (e.line, e.column) == (1, 11) and _caret_text(e) == "$x", str(e)
    assert "unknown parameter '$x' in the default of parameter h of block a" in e.message, str(e)
    assert "flow body" not in e.message
