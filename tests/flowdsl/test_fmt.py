"""``flowdsl fmt`` / ``flowdsl.fmt.format_source``: the canonical layout keeps the spec, keeps every
comment in order and attached to the same statement, and is idempotent.

References: the front end's syntax tree (``parse_syntax``; spans do not take part in equality),
an attachment map computed here from the token stream independently of the formatter, and a
hypothesis strategy over the whole grammar plus the existing spec strategy of
tests/flowdsl/test_properties.py with whitespace and comments shaken in.
"""

from __future__ import annotations

import importlib.util
import random
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Token, Tree

import flowdsl
from flowdsl.errors import FlowDSLError, ParseError
from flowdsl.fmt import WIDTH, _parser, format_source, format_with_syntax
from flowdsl.parser import KEYWORDS, parse_syntax

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.flow"))

# the example of the language contract (/work/shared/dsl.md, "A file"), verbatim
DSL_MD_EXAMPLE = """\
# A Glow-style multi-scale flow with emerging convolutions.
block step(hidden=256, kernel=3) {
    actnorm
    conv(kind=emerging, kernel=$kernel)
    coupling(kind=affine, hidden=$hidden)
}

flow emerging_small {
    input image(channels=3, height=32, width=32, levels=256)
    dequantize uniform

    repeat 3 {                 # three scales
        squeeze(factor=2)
        repeat 8 { step(hidden=256) }
        split
    }

    prior gaussian(learned=true)
    objective mle
    train(data=digits, batch=64, lr=1e-3, steps=2000, seed=0)
}
"""


def _code_blocks(markdown: str) -> list[str]:
    """The unlabelled fenced code blocks of a markdown text that hold a spec (a ``flow``)."""
    blocks, current, lang = [], None, None
    for line in markdown.splitlines(keepends=True):
        fence = re.match(r"\s*```(\w*)", line)
        if fence and current is None:
            current, lang = [], fence.group(1)
        elif fence:
            if lang == "":
                blocks.append("".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return [b for b in blocks if re.search(r"^flow \w+ \{", b, re.M)]


def _readme_specs() -> list[str]:
    return _code_blocks((ROOT / "README.md").read_text(encoding="utf-8"))


def _dsl_md_specs() -> list[str]:
    path = Path("/work/shared/dsl.md")  # the contract, when this machine has it (the literal above is its copy)
    texts = [DSL_MD_EXAMPLE]
    if path.exists():
        texts += _code_blocks(path.read_text(encoding="utf-8"))
    return texts


# ---- an attachment map, computed from the tokens (independent of the formatter) ------------------

_STMTS = {
    "block_def",
    "flow_def",
    "input_stmt",
    "context_stmt",
    "dequant_stmt",
    "prior_stmt",
    "objective_stmt",
    "train_stmt",
    "repeat_stmt",
    "call_stmt",
    "body_part",
}


def _statements(tree: Tree) -> list[tuple[int, int]]:
    """(start, end) offsets of every statement, block, flow and part, in pre-order."""
    out = []
    for t in tree.iter_subtrees_topdown():
        if t.data in _STMTS:
            toks = [x for x in t.scan_values(lambda v: isinstance(v, Token))]
            out.append((min(x.start_pos for x in toks), max(x.end_pos for x in toks)))
    return out


def attachments(text: str) -> list[tuple[str, str, int | None, int | None]]:
    """For each comment, in order: (text, 'trailing'|'own-line', statement, next statement).

    A trailing comment (a token before it on its line) belongs to the innermost statement of that
    token; a comment on its own line to the innermost statement around it and the first statement
    that starts after it. Statements are numbered in pre-order, so equal maps of two texts with the
    same syntax tree mean every comment is attached to the same statement."""
    tree = _parser().parse(text)
    stmts = _statements(tree)
    toks = sorted((x for x in tree.scan_values(lambda v: isinstance(v, Token))), key=lambda x: x.start_pos)
    out = []
    for m in re.finditer(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*', text):
        if not m.group().startswith("#"):
            continue
        prev = [x for x in toks if x.end_pos <= m.start()]
        if prev and "\n" not in text[prev[-1].end_pos : m.start()]:
            p = prev[-1]
            inside = [i for i, (s, e) in enumerate(stmts) if s <= p.start_pos and p.end_pos <= e]
            out.append((m.group().rstrip(), "trailing", max(inside, key=lambda i: stmts[i][0]), None))
        else:
            inside = [i for i, (s, e) in enumerate(stmts) if s < m.start() < e]
            after = [i for i, (s, _) in enumerate(stmts) if s > m.start()]
            owner = max(inside, key=lambda i: stmts[i][0]) if inside else None
            out.append((m.group().rstrip(), "own-line", owner, after[0] if after else None))
    return out


def check_format(text: str) -> str:
    """format_source keeps the syntax tree and the comments (in order, same statements) and is
    idempotent; every line fits in WIDTH unless a single argument or comment is longer."""
    before, out = format_with_syntax(text)
    after, again = format_with_syntax(out)
    assert after == before, "the syntax tree changed"
    assert again == out, "not idempotent"
    assert attachments(out) == attachments(text)
    assert out.endswith("\n") and not out.endswith("\n\n") and "\n\n\n" not in out
    for line in out.splitlines():
        assert line == line.rstrip() and "\t" not in line[: len(line) - len(line.lstrip())]
    return out


# ---- the core layout ----------------------------------------------------------------------------


def test_canonical_layout_of_a_messy_spec():
    text = (
        "block  s( h = 4 ,m=channel, ) {actnorm   coupling( hidden = $ h , mask=$m,)}\n"
        "flow f{input vector( dim=4 ) dequantize none\n\n\n\n repeat 2{s(h=8)} repeat 2 { actnorm permute }"
        "  rg(kernel=4){disentangler{coupling} decimator{}}  prior laplace(scale=.5) objective mle\n"
        'train(data="a#b.npz", steps=1e3, sizes=[1,2,[3, 4,],], net=convnet(hidden=8,),)}'
    )
    assert check_format(text) == (
        "block s(h=4, m=channel) {\n"
        "    actnorm\n"
        "    coupling(hidden=$h, mask=$m)\n"
        "}\n"
        "flow f {\n"
        "    input vector(dim=4)\n"
        "    dequantize none\n"
        "\n"
        "    repeat 2 { s(h=8) }\n"
        "    repeat 2 {\n"
        "        actnorm\n"
        "        permute\n"
        "    }\n"
        "    rg(kernel=4) {\n"
        "        disentangler { coupling }\n"
        "        decimator {}\n"
        "    }\n"
        "    prior laplace(scale=.5)\n"
        "    objective mle\n"
        '    train(data="a#b.npz", steps=1e3, sizes=[1, 2, [3, 4]], net=convnet(hidden=8))\n'
        "}\n"
    )


def test_comments_leading_trailing_dangling_and_inside_a_header():
    text = (
        "# file header\n"
        "\n"
        "flow f {   # after the brace\n"
        "  input vector(dim=4)   # the data\n"
        "  # before the repeat\n"
        "  repeat 2 { actnorm }  # inline repeat\n"
        "  repeat 2 {\n"
        "      # only a comment in the body\n"
        "      permute\n"
        "  }\n"
        "  prior laplace(scale=1.0,  # inside the header\n"
        "     learned=true)\n"
        "  # dangling before the brace\n"
        "} # after the flow\n"
        "# at the end\n"
    )
    out = format_source(text)
    assert out == (
        "# file header\n"
        "\n"
        "flow f {  # after the brace\n"
        "    input vector(dim=4)  # the data\n"
        "    # before the repeat\n"
        "    repeat 2 { actnorm }  # inline repeat\n"
        "    repeat 2 {\n"
        "        # only a comment in the body\n"
        "        permute\n"
        "    }\n"
        "    # inside the header\n"
        "    prior laplace(scale=1.0, learned=true)\n"
        "    # dangling before the brace\n"
        "}  # after the flow\n"
        "# at the end\n"
    )
    assert format_source(out) == out
    assert parse_syntax(out)[0] == parse_syntax(text)[0]
    # every comment's text, in order
    assert re.findall(r"#[^\n]*", out) == [c.rstrip() for c in re.findall(r"#[^\n]*", text)]


def test_a_comment_inside_a_body_keeps_a_single_statement_body_on_several_lines():
    out = check_format("flow f { input vector(dim=2) repeat 2 { # why\n actnorm } }")
    assert "    repeat 2 {  # why\n        actnorm\n    }\n" in out


def test_long_argument_lists_wrap_at_100_columns():
    args = ", ".join(f"argument_{i}={i * 1000}" for i in range(12))
    out = check_format(f"flow f {{ input vector(dim=2) coupling({args}) }}")
    lines = out.splitlines()
    assert all(len(line) <= WIDTH for line in lines)
    start = next(i for i, line in enumerate(lines) if "coupling(" in line)
    assert lines[start].startswith("    coupling(argument_0=0, ")
    assert lines[start + 1].startswith(" " * len("    coupling(") + "argument_")  # aligned under the first
    # a head too long to align under: one continuation level, closing parenthesis on its own line
    long_name = "b" * 80
    out = check_format(f"block {long_name}(p=1, q=2, r=3, s=4) {{ actnorm }} flow f {{ input vector(dim=2) }}")
    assert out.startswith(f"block {long_name}(\n    p=1, q=2, r=3, s=4,\n) {{\n")


def test_blank_lines_are_kept_up_to_one_and_never_at_body_edges():
    out = check_format("\n\nflow f {\n\n\n  input vector(dim=2)\n\n\n\n  actnorm\n\n}\n\n\n")
    assert out == "flow f {\n    input vector(dim=2)\n\n    actnorm\n}\n"


def test_whitespace_does_not_change_the_layout():
    a = format_source("flow f { input vector(dim=2) repeat 2 { actnorm coupling(hidden=4) } prior gaussian }")
    b = format_source("flow\tf\n{\ninput\n vector\n(\ndim\n=\n2\n)\nrepeat 2\n{ actnorm\n coupling(\nhidden=4) }\n"
                      "prior\n gaussian\n}")
    assert a == b


def test_trailing_comments_on_consecutive_lines_are_aligned():
    out = check_format("flow f {\n input vector(dim=2) # a\n actnorm # b\n\n permute # c\n}\n")
    assert "    input vector(dim=2)  # a\n    actnorm              # b\n\n    permute  # c\n" in out


def test_text_that_does_not_parse_raises_the_located_front_end_error():
    with pytest.raises(ParseError) as e:
        format_source("flow f {\n  actnorm(\n}\n", "bad.flow")
    assert isinstance(e.value, FlowDSLError)
    assert (e.value.filename, e.value.line) == ("bad.flow", 3)
    with pytest.raises(FlowDSLError):
        format_source("flow f { actnorm } flow g { }")


def test_a_byte_order_mark_and_crlf_line_ends_are_dropped():
    assert format_source("\ufeffflow f {\r\n  actnorm # c\r\n}\r\n") == "flow f {\n    actnorm  # c\n}\n"


def test_a_spec_that_parses_but_fails_the_checker_is_still_formatted():
    out = check_format("flow f { actnrom(kind=nope) }")
    with pytest.raises(FlowDSLError):
        flowdsl.parse(out)


# ---- every spec in the repository -----------------------------------------------------------------


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_bundled_spec_is_formatted_and_keeps_its_graph(path):
    text = path.read_text(encoding="utf-8")
    assert format_source(text) == text, f"{path.name} is not formatted: run `flowdsl fmt specs/`"
    check_format(text)


def _unlocated(obj) -> str:
    return re.sub(r"span=Span\([^)]*\)|Span\([^)]*\)", "", repr(obj))


def _layers(text: str) -> list:
    """The checked spec without source locations: models, and every graph node's kind, validated
    arguments, shapes and parameter count."""
    spec = flowdsl.parse(text)
    nodes = [(n.kind, _unlocated(n.args), n.in_shape, n.out_shape, n.n_params, n.via) for n in spec.graph.layers()]
    context = None if spec.context is None else _unlocated(spec.context)
    return [spec.name, _unlocated(spec.input), context, _unlocated(spec.prior), _unlocated(spec.objective)] + nodes


def test_readme_and_language_reference_examples_keep_their_spec():
    texts = _readme_specs() + _dsl_md_specs()
    assert len(texts) >= 2
    for text in texts:
        try:
            expected = _layers(text)
        except FlowDSLError as err:  # an example of a rejected spec: the same error after formatting
            with pytest.raises(FlowDSLError) as again:
                _layers(check_format(text))
            assert type(again.value) is type(err) and again.value.message == err.message
            continue
        assert _layers(check_format(text)) == expected


def test_readme_shows_the_formatted_first_spec():
    first = _readme_specs()[0]
    assert first == (ROOT / "specs" / "glow_digits.flow").read_text(encoding="utf-8")


# ---- hypothesis: the whole grammar ------------------------------------------------------------------

_NAMES = st.sampled_from(["a", "b", "hidden", "kind", "lu", "step", "x_1", "_p", "convnet", "Ab"])
_SPACE = st.sampled_from([" ", "  ", "\n", "\t", " \n  ", "\n\n", ""])


@st.composite
def _value(draw, depth=0):
    kinds = ["int", "float", "bool", "string", "name", "ref"] + (["list", "call"] if depth < 2 else [])
    k = draw(st.sampled_from(kinds))
    if k == "int":
        return draw(st.sampled_from(["0", "8", "-1", "+3", "123456"]))
    if k == "float":
        return draw(st.sampled_from(["1e-3", "0.5", ".5", "2.", "-1.5E+4", "3.0"]))
    if k == "bool":
        return draw(st.sampled_from(["true", "false"]))
    if k == "string":
        return draw(st.sampled_from(['"data/x.npz"', '"# not a comment"', r'"a\"b"', '""', r'"\\"']))
    if k == "name":
        return draw(_NAMES)
    if k == "ref":
        return "$" + draw(st.sampled_from(["", " "])) + draw(_NAMES)
    if k == "list":
        items = draw(st.lists(_value(depth + 1), max_size=3))
        return "[" + ", ".join(items) + draw(st.sampled_from(["", ","] if items else [""])) + "]"
    return draw(_NAMES) + draw(_arglist(depth + 1))


@st.composite
def _arglist(draw, depth=0):
    args = draw(
        st.lists(st.tuples(st.one_of(st.none(), _NAMES), _value(depth)), max_size=3 if depth else 5)
    )
    text = ", ".join(v if n is None else f"{n} ={draw(_SPACE)}{v}" for n, v in args)
    return "(" + text + draw(st.sampled_from(["", ","] if args else [""])) + ")"


def _join(draw, parts: list[str]) -> str:
    """Parts separated (and preceded) by random whitespace, with own-line and trailing comments at
    the statement boundaries (a comment always ends its line)."""
    out = [draw(st.sampled_from(["", " ", "  # first\n", "\n  # first own line\n"]))]
    for p in parts:
        out.append(p)
        r = draw(st.integers(0, 9))
        if r == 0:
            out.append(f"  # c{len(out)} trailing\n")
        elif r == 1:
            out.append(f"\n# c{len(out)} own line\n")
        elif r == 2:
            out.append(f"\n\n   #c{len(out)}\t x \n\n")
        else:
            out.append(draw(_SPACE) or " ")
    return "".join(out)


@st.composite
def _stmt(draw, depth=0):
    kinds = ["call", "input", "context", "dequantize", "prior", "objective", "train"]
    kinds += ["repeat", "parts"] if depth < 3 else []
    k = draw(st.sampled_from(kinds))
    args = draw(st.one_of(st.just(""), _arglist()))
    if k == "call":
        return draw(_NAMES) + args
    if k in ("input", "context"):
        return f"{k} " + draw(_NAMES) + args
    if k == "dequantize":
        return "dequantize " + draw(_NAMES)
    if k in ("prior", "objective"):
        return f"{k} {draw(_NAMES)}{args}"
    if k == "train":
        return "train" + args
    if k == "repeat":
        return f"repeat {draw(_value(1))} {{ " + draw(_body(depth + 1)) + "}"
    parts = [f"{draw(_NAMES)} {{ " + draw(_body(depth + 1)) + "}" for _ in range(draw(st.integers(0, 2)))]
    return draw(_NAMES) + args + " { " + _join(draw, parts) + "}"


@st.composite
def _body(draw, depth=0):
    return _join(draw, draw(st.lists(_stmt(depth), max_size=4 if depth == 0 else 2)))


@st.composite
def any_syntax(draw):
    """Spec text of any syntactically valid shape (not necessarily one the checker accepts)."""
    blocks = []
    for _ in range(draw(st.integers(0, 2))):
        params = draw(st.lists(st.tuples(_NAMES, st.one_of(st.none(), _value(1))), max_size=3))
        plist = ", ".join(n if v is None else f"{n}={v}" for n, v in params)
        head = f"block {draw(_NAMES)}" + draw(st.sampled_from([f"({plist})", ""] if not params else [f"({plist})"]))
        blocks.append(head + " { " + draw(_body()) + "}")
    flow = "flow " + draw(_NAMES) + " { " + draw(_body()) + "}"
    return draw(st.sampled_from(["", "# header\n", "\n\n"])) + _join(draw, blocks + [flow])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_syntax())
def test_format_keeps_any_syntax_tree_and_its_comments(text):
    check_format(text)


def test_the_syntax_strategy_covers_keywords_used_as_names_nowhere():
    # the strategy's names are identifiers, never keywords (which would not parse as names)
    assert not {"a", "b", "hidden", "kind", "lu", "step", "x_1", "_p", "convnet", "Ab"} & set(KEYWORDS)


# ---- hypothesis: the checked spec strategy of test_properties.py, shaken ----------------------------


def _load_spec_strategy():
    path = Path(__file__).resolve().parent / "test_properties.py"
    spec = importlib.util.spec_from_file_location("_fmt_spec_strategy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.specs


SPEC_STRATEGY = _load_spec_strategy()  # the strategy of test_properties.py (checked, valid specs)


@st.composite
def shaken_specs(draw):
    """A valid spec of the existing strategy, with every statement boundary given random
    whitespace and comments, and the spaces inside statements removed or stretched."""
    text, _shape = draw(SPEC_STRATEGY())
    tree = _parser().parse(text)
    cuts = sorted({c for span in _statements(tree) for c in span} - {0})
    pieces, last = [], 0
    for c in cuts:
        pieces.append(text[last:c])
        last = c
    pieces.append(text[last:])
    pieces = [re.sub(r"(?<=[(,=]) +| +(?=[),=])", lambda m: draw(st.sampled_from(["", " ", "  "])), p.strip())
              for p in pieces]
    return _join(draw, [p for p in pieces if p])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shaken_specs())
def test_format_keeps_the_checked_spec_on_the_spec_strategy(text):
    # the syntax tree is equal (check_format), so the checked spec is too; checking every tenth
    # example through flowdsl.parse as well keeps the test fast
    out = check_format(text)
    if zlib.crc32(text.encode()) % 10 == 0:
        assert _layers(out) == _layers(text)


# ---- mutated specs (the front-end fuzzer's mutations) ------------------------------------------------


def _comments(text: str) -> list[str]:
    found = re.findall(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*', text)
    return [c.rstrip() for c in found if c.startswith("#")]


def test_mutated_specs_are_rejected_with_a_located_error_or_formatted_faithfully():
    """Token deletions, swaps, junk, deep nesting, comments in odd places: the formatter either
    raises the front end's located error or keeps the syntax tree and every comment in order."""
    from flowdsl.fuzz import mutate, seed_specs

    rng = random.Random(7)
    seeds = seed_specs()
    formatted = 0
    for _ in range(800):
        data = mutate(rng.choice(seeds), rng)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        try:
            before, out = format_with_syntax(text, "m.flow")
        except FlowDSLError as e:
            assert e.line >= 1 and str(e).startswith("m.flow:")
            continue
        after, again = format_with_syntax(out)
        assert after == before and again == out, text
        assert _comments(out) == _comments(text.lstrip("\ufeff")), text
        formatted += 1
    assert formatted >= 30


# ---- the command ----------------------------------------------------------------------------------


def _run(*args: str, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flowdsl", "fmt", *args], capture_output=True, text=True, input=stdin, cwd=cwd
    )


def test_fmt_check_prints_a_diff_and_exits_1_then_fmt_rewrites(tmp_path):
    messy = "flow f {input vector(dim=2)   # c\nactnorm}\n"
    f = tmp_path / "m.flow"
    f.write_text(messy)
    (tmp_path / "ok.flow").write_text(format_source(messy))
    out = _run("--check", str(tmp_path))
    assert out.returncode == 1, out.stderr
    assert f"--- {f}" in out.stdout and "-flow f {input vector(dim=2)   # c" in out.stdout
    assert "+    input vector(dim=2)  # c" in out.stdout
    assert f.read_text() == messy  # --check changes nothing
    out = _run(str(f), str(tmp_path / "ok.flow"))
    assert out.returncode == 0, out.stderr
    assert f.read_text() == format_source(messy) and f"reformatted {f}" in out.stdout
    assert "1 of 2 files reformatted" in out.stderr
    out = _run("--check", str(f), str(tmp_path / "ok.flow"))
    assert (out.returncode, out.stdout) == (0, "")


def test_fmt_errors_exit_1_without_a_traceback_and_leave_the_file(tmp_path):
    bad = tmp_path / "bad.flow"
    bad.write_text("flow f {\n  actnorm(\n")
    out = _run(str(bad), str(tmp_path / "missing.flow"))
    assert out.returncode == 1
    assert f"{bad}:2:" in out.stderr and "cannot read spec file" in out.stderr and "Traceback" not in out.stderr
    assert bad.read_text() == "flow f {\n  actnorm(\n"


def test_fmt_stdin_to_stdout():
    out = _run("-", stdin="flow f {actnorm}")
    assert (out.returncode, out.stdout) == (0, "flow f {\n    actnorm\n}\n")
    out = _run("-", stdin="flow f {")
    assert out.returncode == 1 and "<stdin>:1:" in out.stderr


def test_fmt_never_imports_torch(tmp_path):
    f = tmp_path / "x.flow"
    f.write_text("flow f { input vector(dim=2) actnorm }")
    code = (
        "import sys\n"
        "from flowdsl.cli import main\n"
        "rc = main(['fmt', '--check', sys.argv[1]])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'onnx', 'numpy'} "
        "or m.startswith('flowdsl.runtime'))\n"
        "print('IMPORTED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True, cwd="/")
    assert "IMPORTED []" in out.stdout, out.stdout[-500:] + out.stderr[-500:]
