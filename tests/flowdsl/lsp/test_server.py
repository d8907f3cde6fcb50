"""``flowdsl lsp`` driven by a real LSP client (pygls's LanguageClient) over stdio, in a subprocess.

The references are independent of the server: diagnostics against ``flowdsl check``'s printed
``file:line:col: error: message`` (the same spec file, run as a command), shapes against the
closed forms of squeeze/split on glow_digits, formatting against ``flowdsl.fmt.format_source``.
One server process serves the module (its start is the slow part on shared cores); each test
opens its own document URI. Timeouts are generous and nothing is timed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from langtest import GLOW
from lsprotocol import types as T

from flowdsl.lsp.client import LspSession

LINES = GLOW.split("\n")


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.split("\n")) if needle in line)


@pytest.fixture(scope="module")
def lsp():
    s = LspSession(timeout=180)
    yield s
    code = s.close()
    assert code == 0, f"server exit code {code}"


def _check_output(tmp_path: Path, name: str, text: str) -> tuple[int, int, str, str]:
    """``flowdsl check`` on ``text``: (line, column, kind, message) of its first located report."""
    f = tmp_path / name
    f.write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "flowdsl", "check", str(f)], capture_output=True, text=True, timeout=300
    )
    m = re.search(rf"^{re.escape(str(f))}:(\d+):(\d+): (error|warning): (.*)$", out.stderr, re.M)
    assert m, out.stderr
    return int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)


def test_initialize_announces_the_features(lsp):
    caps = lsp.init_result.capabilities
    assert caps.hover_provider and caps.definition_provider and caps.references_provider
    assert caps.document_symbol_provider and caps.document_formatting_provider and caps.inlay_hint_provider
    assert "(" in caps.completion_provider.trigger_characters and "=" in caps.completion_provider.trigger_characters
    assert lsp.init_result.server_info.name == "flowdsl"


def test_bad_spec_diagnostic_at_check_location_then_cleared_by_a_fix(lsp, tmp_path):
    uri = "file:///work/diag.flow"
    bad = GLOW.replace("conv1x1(param=lu)", "conv1x1(param=lux)")
    lsp.open(uri, bad, version=1)
    (d,) = lsp.wait_diagnostics(uri, version=1)
    line, col, kind, message = _check_output(tmp_path, "diag.flow", bad)
    row = _line_of(bad, "param=lux")
    assert (line, col) == (row + 1, LINES[row].index("lu") + 1)  # check points at the value
    assert (d.range.start.line, d.range.start.character) == (line - 1, col - 1)
    assert (d.range.end.line, d.range.end.character) == (line - 1, col - 1 + len("lux"))
    assert d.severity == T.DiagnosticSeverity.Error and kind == "error"
    assert d.message == message
    # an incremental edit that fixes the value (delete the 'x'): the diagnostics clear
    lsp.edit(uri, 2, (row, col - 1 + 2), (row, col - 1 + 3), "")
    assert lsp.wait_diagnostics(uri, version=2) == []
    # a full change that breaks the syntax: a parse error where check puts it
    broken = GLOW.replace("squeeze(factor=2)  # (1", "squeeze(factor=)            # (1")
    lsp.change(uri, broken, 3)
    (d,) = lsp.wait_diagnostics(uri, version=3)
    line, col, _, message = _check_output(tmp_path, "diag3.flow", broken)
    assert (d.range.start.line + 1, d.range.start.character + 1) == (line, col) and d.message == message


def test_warnings_are_published_as_warnings(lsp, tmp_path):
    uri = "file:///work/warn.flow"
    text = "flow f {\n  input vector(dim=3)\n  butterfly\n}\n"
    lsp.open(uri, text)
    (d,) = lsp.wait_diagnostics(uri, version=1)
    line, col, kind, message = _check_output(tmp_path, "warn.flow", text)
    assert kind == "warning" and d.severity == T.DiagnosticSeverity.Warning
    assert (d.range.start.line + 1, d.range.start.character + 1) == (line, col) == (3, 3)
    assert d.message == message


def test_hover_on_a_layer_shows_its_shape_in_and_out(lsp):
    uri = "file:///work/hover.flow"
    lsp.open(uri, GLOW)
    assert lsp.wait_diagnostics(uri, version=1) == []
    row = _line_of(GLOW, "squeeze(factor=2)  # (1, 8, 8)")
    h = lsp.hover(uri, row, LINES[row].index("squeeze") + 2)
    text = h.contents.value
    assert "**squeeze**" in text and "factor=2" in text
    assert "(1, 8, 8) → (4, 4, 4)" in text  # (C, H, W) -> (C·f², H/f, W/f) with f = 2
    # a layer inside a block called by two repeats: all 8 instances, in forward order
    row = _line_of(GLOW, "conv1x1(param=lu)")
    text = lsp.hover(uri, row, LINES[row].index("conv1x1") + 1).contents.value
    assert "8 instances" in text and "lu | qr | plain" in text and "`param=lu`" in text
    shapes = re.findall(r"\((\d+, \d+, \d+)\) → \((\d+, \d+, \d+)\)", text)
    assert shapes == [("4, 4, 4", "4, 4, 4")] * 4 + [("8, 2, 2", "8, 2, 2")] * 4
    # split: half of the 4 channels leave as latents
    row = _line_of(GLOW, "    split")
    text = lsp.hover(uri, row, LINES[row].index("split") + 1).contents.value
    assert "(4, 4, 4) → (2, 4, 4) + latent (2, 4, 4)" in text


def test_hover_on_block_call_and_on_param(lsp):
    uri = "file:///work/hover2.flow"
    text = GLOW.replace("repeat 4 { step(hidden=64) }\n    split", "repeat 4 { step(hidden=32) }\n    split")
    lsp.open(uri, text)
    assert lsp.wait_diagnostics(uri, version=1) == []
    lines = text.split("\n")
    row = _line_of(text, "step(hidden=32)")
    sig = lsp.hover(uri, row, lines[row].index("step") + 1).contents.value
    assert "block step(hidden=64)" in sig
    row = _line_of(text, "$hidden")
    val = lsp.hover(uri, row, lines[row].index("$hidden") + 1).contents.value
    assert re.findall(r"`coupling\d`: hidden=(\d+)", val) == ["32"] * 4 + ["64"] * 4
    assert "32 — line 14 (×4)" in val and "64 — line 17 (×4)" in val


def test_completion_offers_arguments_then_enumeration_values(lsp):
    uri = "file:///work/complete.flow"
    text = GLOW.replace("conv1x1(param=lu)", "conv1x1(")  # does not parse: the line is being typed
    lsp.open(uri, text)
    assert lsp.wait_diagnostics(uri, version=1)  # a syntax error
    row = _line_of(text, "conv1x1(")
    col = text.split("\n")[row].index("(") + 1
    labels = [i.label for i in lsp.completion(uri, row, col)]
    assert labels == ["param"]
    lsp.edit(uri, 2, (row, col), (row, col), "param=")
    lsp.wait_diagnostics(uri, version=2)
    items = lsp.completion(uri, row, col + len("param="))
    assert {"lu", "qr", "plain"} <= {i.label for i in items}
    assert {i.label for i in items} - {"lu", "qr", "plain"} == {"$hidden"}  # inside block step


def test_completion_of_statements_priors_and_args_not_given(lsp):
    uri = "file:///work/complete2.flow"
    text = GLOW.replace("    prior gaussian(learned=true)", "    prior \n    coupling(kind=additive, ")
    lsp.open(uri, text)
    lines = text.split("\n")
    row = _line_of(text, "    prior ")
    priors = {"gaussian", "gmm", "laplace", "spike_slab", "student_t"}
    assert {i.label for i in lsp.completion(uri, row, len(lines[row]))} == priors
    row = _line_of(text, "coupling(kind=additive, ")
    labels = {i.label for i in lsp.completion(uri, row, len(lines[row]))}
    assert labels == {"hidden", "net", "depth", "mask", "bins", "bound", "context"}
    row = _line_of(text, "    squeeze(factor=2)  # (2")
    labels = {i.label for i in lsp.completion(uri, row, 4)}
    assert {"actnorm", "coupling", "step", "repeat", "prior gaussian", "objective fdrl"} <= labels


def test_definition_and_references_of_a_block(lsp):
    uri = "file:///work/nav.flow"
    lsp.open(uri, GLOW)
    row = _line_of(GLOW, "repeat 4 { step")
    loc = lsp.definition(uri, row, LINES[row].index("step") + 2)
    loc = loc[0] if isinstance(loc, list) else loc
    block_row = _line_of(GLOW, "block step(")
    assert loc.uri == uri
    assert (loc.range.start.line, loc.range.start.character) == (block_row, LINES[block_row].index("step"))
    assert loc.range.end.character == LINES[block_row].index("step") + 4
    refs = lsp.references(uri, row, LINES[row].index("step") + 1, declaration=True)
    assert sorted(r.range.start.line for r in refs) == sorted(
        [block_row] + [i for i, line in enumerate(LINES) if "{ step(" in line]
    )


def test_document_symbols_and_inlay_hints(lsp):
    uri = "file:///work/outline.flow"
    lsp.open(uri, GLOW)
    lsp.wait_diagnostics(uri, version=1)
    syms = lsp.document_symbols(uri)
    assert [(s.name, s.kind) for s in syms] == [("step", T.SymbolKind.Function), ("glow_digits", T.SymbolKind.Module)]
    assert [c.name for c in syms[1].children] == ["repeat 4", "repeat 4"]
    assert syms[1].range.start.line == _line_of(GLOW, "flow glow_digits")
    hints = {h.position.line: h.label for h in lsp.inlay_hints(uri, 0, len(LINES))}
    assert hints[_line_of(GLOW, "# (1, 8, 8)")] == "→ (4, 4, 4)"
    assert hints[_line_of(GLOW, "    split")] == "→ (2, 4, 4)"
    assert hints[_line_of(GLOW, "conv1x1(param=lu)")] == "→ (4, 4, 4) | (8, 2, 2)"
    lsp.configure({"flowdsl": {"inlayHints": False}})
    assert lsp.inlay_hints(uri, 0, len(LINES)) == []
    lsp.configure({"flowdsl": {"inlayHints": True}})
    assert lsp.inlay_hints(uri, 0, len(LINES))


def _apply(text: str, edits) -> str:
    lines = text.split("\n")
    for e in sorted(edits or [], key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        s, t = e.range.start, e.range.end
        head = "\n".join(lines[: s.line] + [lines[s.line][: s.character]]) if s.line < len(lines) else text
        tail = "\n".join([lines[t.line][t.character :]] + lines[t.line + 1 :]) if t.line < len(lines) else ""
        text = head + e.new_text + tail
        lines = text.split("\n")
    return text


def test_formatting_is_flowdsl_fmt(lsp, tmp_path):
    uri = "file:///work/fmt.flow"
    messy = "block  b( h=4 ){coupling( hidden=$h ,net=mlp)}\nflow   f{input vector( dim=4 )\n  b(h=8)   actnorm}\n"
    lsp.open(uri, messy)
    edits = lsp.formatting(uri)
    f = tmp_path / "fmt.flow"  # `flowdsl fmt FILE` rewrites the file in place
    f.write_text(messy)
    out = subprocess.run([sys.executable, "-m", "flowdsl", "fmt", str(f)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    expected = f.read_text()
    assert expected != messy
    assert _apply(messy, edits) == expected
    lsp.change(uri, expected, 2)
    assert list(lsp.formatting(uri)) == []  # already formatted: no edit
    lsp.change(uri, messy.replace("actnorm}", "actnorm("), 3)  # does not parse: no edit, no error
    assert lsp.formatting(uri) is None


def test_the_server_never_imports_torch(tmp_path):
    out = tmp_path / "modules.txt"
    probe = (
        "import atexit, sys\n"
        f"def dump():\n    open({str(out)!r}, 'w').write('\\n'.join(sorted(sys.modules)))\n"
        "atexit.register(dump)\n"
        "from flowdsl.cli import main\n"
        "sys.exit(main(['lsp']))\n"
    )
    with LspSession(command=(sys.executable, "-c", probe), timeout=180) as s:
        uri = "file:///work/torch.flow"
        s.open(uri, GLOW)
        assert s.wait_diagnostics(uri, version=1) == []
        row = _line_of(GLOW, "conv1x1")
        assert s.hover(uri, row, 6) is not None
        assert s.completion(uri, row + 1, 4)
        s.inlay_hints(uri, 0, 20)
        s.document_symbols(uri)
    modules = out.read_text().split("\n")
    assert "flowdsl.lsp.server" in modules and "flowdsl.compiler.passes" in modules
    heavy = [m for m in modules if m.split(".")[0] in {"torch", "onnx", "numpy"} or m.startswith("flowdsl.runtime")]
    assert heavy == []
