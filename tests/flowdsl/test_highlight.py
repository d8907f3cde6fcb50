"""Highlighting: the Pygments lexer (through the installed entry point and ``pygmentize``), the
TextMate grammar of the VS Code extension (run here by a small TextMate matcher, and kept equal
to what the registry generates) and the extension's client (run under Node with stand-in
``vscode`` modules)."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import Comment, Error, Keyword, Name, Number, String

from flowdsl.highlight import GRAMMAR_PATH, grammar_json, textmate_grammar, vocabulary

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.flow"))
VSCODE = ROOT / "editors" / "vscode"
GLOW = ROOT / "specs" / "glow_digits.flow"


def _pygmentize(path: Path) -> list[tuple[str, str]]:
    exe = Path(sys.executable).parent / "pygmentize"
    out = subprocess.run([str(exe), "-l", "flowdsl", "-f", "raw", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    pairs = []
    for line in out.stdout.splitlines():
        kind, value = line.split("\t", 1)
        pairs.append((kind, ast.literal_eval(value)))
    return pairs


def _first(pairs, value: str) -> str:
    return next(k for k, v in pairs if v == value)


def test_pygmentize_highlights_keywords_layers_numbers_params_and_comments():
    pairs = _pygmentize(GLOW)
    text = GLOW.read_text(encoding="utf-8")
    assert "".join(v for _, v in pairs) == text
    assert not any("Error" in k for k, _ in pairs)
    for kw in ("block", "flow"):
        assert _first(pairs, kw) == "Token.Keyword.Declaration"
    for kw in ("input", "dequantize", "repeat", "prior", "objective", "train"):
        assert _first(pairs, kw) == "Token.Keyword", kw
    assert _first(pairs, "true") == "Token.Keyword.Constant"
    for layer in ("actnorm", "conv1x1", "coupling", "squeeze", "split"):
        assert _first(pairs, layer) == "Token.Name.Builtin", layer
    assert _first(pairs, "gaussian") == _first(pairs, "mle") == "Token.Name.Class"
    assert _first(pairs, "64") == "Token.Literal.Number.Integer"
    assert _first(pairs, "1e-3") == "Token.Literal.Number.Float"
    assert ("Token.Name.Variable", "hidden") in pairs and ("Token.Name.Variable", "$") in pairs
    comments = [v for k, v in pairs if k == "Token.Comment.Single"]
    assert comments == re.findall(r"#[^\n]*", text)
    assert _first(pairs, "hidden") == "Token.Name.Attribute"  # an argument name (block parameter)
    assert _first(pairs, "step") == "Token.Name.Function"  # block name after 'block'
    assert ("Token.Name", "conv") in pairs  # net=conv: an enumeration value, not the conv layer


def test_the_lexer_is_found_by_name_and_by_file_name_and_covers_every_spec():
    lexer = get_lexer_by_name("flowdsl")
    assert type(lexer).__name__ == "FlowDSLLexer"
    assert type(get_lexer_for_filename("x.flow")).__name__ == "FlowDSLLexer"
    for path in SPECS:
        text = path.read_text(encoding="utf-8")
        toks = list(lexer.get_tokens(text))
        assert "".join(v for _, v in toks) == text
        assert not [v for t, v in toks if t in Error], path.name
    toks = dict((v, t) for t, v in lexer.get_tokens('rg(kernel=4) { decimator { coupling(x="a#b", y=-2.5) } }'))
    assert toks["rg"] in Name.Builtin and toks["decimator"] in Keyword.Type
    assert toks['"a#b"'] in String and toks["-2.5"] in Number.Float
    assert not any(t in Comment for t in toks.values())  # '#' in a string is not a comment


def test_words_come_from_the_kind_registry():
    from flowdsl.compiler.registry import (
        LayerKind,
        PriorKind,
        register_layer,
        register_prior,
        unregister_layer,
        unregister_prior,
    )

    v = vocabulary()
    assert {"actnorm", "coupling", "rg", "butterfly"} <= set(v["layers"])
    assert {"gaussian", "laplace"} <= set(v["priors"]) and {"mle", "fdrl"} <= set(v["objectives"])
    assert {"disentangler", "decimator"} <= set(v["parts"]) and "rg" not in v["keywords"]

    @register_layer
    class Zlayer(LayerKind):
        name = "zz_test_layer"
        bodies = ("zz_part",)

    @register_prior
    class Zprior(PriorKind):
        name = "zz_test_prior"

    try:
        v = vocabulary()
        assert "zz_test_layer" in v["layers"] and "zz_part" in v["parts"] and "zz_test_prior" in v["priors"]
        assert "zz_test_layer" in json.dumps(textmate_grammar())
    finally:
        unregister_layer("zz_test_layer")
        unregister_prior("zz_test_prior")
    assert "zz_test_layer" not in vocabulary()["layers"]


# ---- the TextMate grammar -----------------------------------------------------------------------


def textmate_tokens(grammar: dict, text: str) -> list[tuple[str, str]]:
    """(scope, text) pairs as a TextMate engine assigns them for a grammar of ``match`` rules:
    at each position the rule whose match starts first wins, ties going to the earlier rule;
    captures name their groups."""
    rules = [(re.compile(r["match"]), r) for r in grammar["patterns"]]
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        pos = 0
        while pos < len(line):
            best = None
            for rx, rule in rules:
                m = rx.search(line, pos)
                if m and m.end() > m.start() and (best is None or m.start() < best[0].start()):
                    best = (m, rule)
            if best is None:
                break
            m, rule = best
            if "name" in rule:
                out.append((rule["name"], m.group()))
            for group, cap in rule.get("captures", {}).items():
                if m.group(int(group)) is not None:
                    out.append((cap["name"], m.group(int(group))))
            pos = m.end()
    return out


def test_the_vscode_grammar_is_the_generated_one():
    assert (ROOT / GRAMMAR_PATH).read_text(encoding="utf-8") == grammar_json(), (
        "run `python -m flowdsl.highlight --write` at the repository root"
    )


def test_the_textmate_grammar_scopes_the_glow_spec():
    toks = textmate_tokens(json.loads((ROOT / GRAMMAR_PATH).read_text(encoding="utf-8")), GLOW.read_text())

    def scope(value: str) -> str:
        return next(s for s, v in toks if v == value)

    assert scope("block") == scope("flow") == "keyword.other.declaration.flowdsl"
    assert scope("step") == "entity.name.function.flowdsl"
    for kw in ("input", "dequantize", "repeat", "prior", "objective", "train"):
        assert scope(kw) == "keyword.control.flowdsl", kw
    for layer in ("actnorm", "conv1x1", "coupling", "squeeze", "split"):
        assert scope(layer) == "support.function.layer.flowdsl", layer
    assert scope("gaussian") == "support.class.prior.flowdsl" and scope("mle") == "support.class.objective.flowdsl"
    assert scope("64") == "constant.numeric.integer.flowdsl" and scope("1e-3") == "constant.numeric.float.flowdsl"
    assert scope("$hidden") == "variable.parameter.reference.flowdsl"
    assert scope("true") == "constant.language.boolean.flowdsl"
    assert ("variable.other.enum.flowdsl", "conv") in toks and ("variable.other.enum.flowdsl", "lu") in toks
    comments = [v for s, v in toks if s.startswith("comment.")]
    assert comments == re.findall(r"#[^\n]*", GLOW.read_text())


def test_the_textmate_grammar_handles_strings_parts_and_signed_numbers():
    toks = textmate_tokens(
        textmate_grammar(), 'rg(kernel=4) { decimator { coupling(x="a#b", y=-2.5, z=[1, 2]) } }  # c'
    )
    assert ("string.quoted.double.flowdsl", '"a#b"') in toks
    assert ("comment.line.number-sign.flowdsl", "# c") in toks and len([t for t in toks if "comment" in t[0]]) == 1
    assert ("keyword.other.part.flowdsl", "decimator") in toks and ("support.function.layer.flowdsl", "rg") in toks
    assert ("constant.numeric.float.flowdsl", "-2.5") in toks and ("constant.numeric.integer.flowdsl", "2") in toks


# ---- the VS Code extension ----------------------------------------------------------------------


def test_the_extension_manifest_declares_language_grammar_and_client():
    pkg = json.loads((VSCODE / "package.json").read_text())
    (lang,) = pkg["contributes"]["languages"]
    assert lang["id"] == "flowdsl" and lang["extensions"] == [".flow"]
    (gram,) = pkg["contributes"]["grammars"]
    assert gram["scopeName"] == textmate_grammar()["scopeName"] and (VSCODE / gram["path"]).exists()
    conf = json.loads((VSCODE / lang["configuration"]).read_text())
    assert conf["comments"]["lineComment"] == "#"
    assert (VSCODE / pkg["main"]).exists() and "vscode-languageclient" in pkg["dependencies"]
    assert pkg["contributes"]["configuration"]["properties"]["flowdsl.server.args"]["default"] == ["lsp"]


NODE_PROBE = r"""
const Module = require("module");
const started = [];
const fakes = {
  vscode: { workspace: { getConfiguration: () => ({ get: (key, dflt) => dflt }) } },
  "vscode-languageclient/node": {
    TransportKind: { stdio: 0 },
    LanguageClient: class {
      constructor(id, name, server, client) { Object.assign(this, { id, name, server, client }); }
      start() { started.push(this); return Promise.resolve(); }
      stop() { return Promise.resolve(); }
    },
  },
};
const load = Module._load;
Module._load = function (request, parent, isMain) {
  return request in fakes ? fakes[request] : load.apply(this, arguments);
};
const ext = require(process.argv[2]);
const context = { subscriptions: [] };
ext.activate(context).then(() => {
  const c = started[0];
  console.log(JSON.stringify({ id: c.id, run: c.server.run, selector: c.client.documentSelector,
                               init: c.client.initializationOptions, disposables: context.subscriptions.length }));
});
"""


def test_the_extension_client_starts_flowdsl_lsp_for_flow_files(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is needed to run the VS Code extension's client (apt-get install nodejs)")
    probe = tmp_path / "probe.js"
    probe.write_text(NODE_PROBE)
    out = subprocess.run([node, str(probe), str(VSCODE / "extension.js")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["run"] == {"command": "flowdsl", "args": ["lsp"], "transport": 0}
    assert {"scheme": "file", "language": "flowdsl"} in got["selector"]
    assert got["init"] == {"flowdsl": {"inlayHints": True}} and got["disposables"] == 1


def _fenced(markdown: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", markdown, re.M | re.S)


def test_readme_editor_setups_start_flowdsl_lsp_on_flow_files():
    import tomllib

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Editor support") : readme.index("## Python API")]
    (helix,) = [tomllib.loads(b) for b in _fenced(section, "toml")]
    server = helix["language-server"]["flowdsl"]
    assert [server["command"], *server["args"]] == ["flowdsl", "lsp"]
    (lang,) = helix["language"]
    assert lang["file-types"] == ["flow"] and lang["language-servers"] == ["flowdsl"] and lang["comment-token"] == "#"
    (nvim,) = _fenced(section, "lua")
    assert 'cmd = { "flowdsl", "lsp" }' in nvim and "extension = { flow = " in nvim
    for feature in ("Diagnostics", "Hover", "Completion", "definition", "references", "symbols", "Inlay", "Formatting"):
        assert feature in section, feature


CONDITIONAL = (
    "flow c {\n"
    "    input image(channels=1, height=8, width=8)\n"
    "    context label(classes=10)\n"
    "    coupling(hidden=8, context=false)\n"
    "    prior gaussian(learned=true, conditional=true)\n"
    "}\n"
)


def test_the_context_statement_is_highlighted_and_context_stays_an_argument_name():
    lexer = get_lexer_by_name("flowdsl")
    pairs = [(t, v) for t, v in lexer.get_tokens(CONDITIONAL) if v.strip()]
    assert pairs[pairs.index((Keyword, "context")) + 1] == (Keyword.Type, "label")
    assert (Name.Attribute, "classes") in pairs and (Name.Attribute, "conditional") in pairs
    args = [v for t, v in pairs if t is Name.Attribute]
    assert args.count("context") == 1  # coupling(context=false): an argument, not the keyword
    keywords = [v for t, v in pairs if t in Keyword]
    assert keywords == ["flow", "input", "image", "context", "label", "false", "prior", "true", "true"]

    toks = textmate_tokens(textmate_grammar(), CONDITIONAL)
    assert ("keyword.control.flowdsl", "context") in toks and ("support.type.input.flowdsl", "label") in toks
    assert ("variable.parameter.argument.flowdsl", "context") in toks
    assert [v for s, v in toks if s == "keyword.control.flowdsl"] == ["input", "context", "prior"]
