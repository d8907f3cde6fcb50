"""The highlighting vocabulary of spec files, and the TextMate grammar built from it.

The words come from the front end and the torch-free kind registry (``flowdsl.compiler.kinds``),
not from a list kept here: a layer kind, prior or objective registered by a new module is
highlighted as one. Two highlighters read :func:`vocabulary`:

* the Pygments lexer (``flowdsl.pygments_lexer.FlowDSLLexer``, registered under the
  ``pygments.lexers`` entry point: ``pygmentize -l flowdsl FILE``, Sphinx and MkDocs code blocks);
* the TextMate grammar of the VS Code extension (``editors/vscode/syntaxes/flowdsl.tmLanguage.json``),
  which is :func:`textmate_grammar` written out by ``python -m flowdsl.highlight --write``
  (tests/flowdsl/test_highlight.py fails when the file is stale).

This module imports neither Pygments nor torch.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

__all__ = ["vocabulary", "textmate_grammar", "NUMBER", "FLOAT", "NAME", "STRING", "COMMENT"]

# the grammar's terminals (grammar/flowdsl.lark)
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
FLOAT = r"[+-]?(?:\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)"
NUMBER = r"[+-]?\d+"
STRING = r'"(?:[^"\\\n]|\\.)*"'
COMMENT = r"#[^\n]*"

INPUT_KINDS = ("image", "vector")  # ``input NAME``: the front end's input kinds
CONTEXT_KINDS = ("image", "label", "vector")  # ``context NAME`` (flowdsl.compiler.context.CONTEXT_KINDS)


def vocabulary() -> dict[str, tuple[str, ...]]:
    """The words by role: ``keywords`` (statement keywords), ``constants`` (true, false),
    ``layers``, ``priors``, ``objectives``, ``parts`` (named parts of composite layers, e.g.
    ``disentangler``), ``inputs`` (input and context kinds); each sorted. A name in two roles (``rg`` is a
    keyword and a layer) takes the more specific one (layer, part)."""
    from flowdsl.compiler.kinds import layer_kinds, objective_kinds, prior_kinds
    from flowdsl.parser import KEYWORDS

    layers = layer_kinds()
    parts = sorted({p for kind in layers.values() for p in kind.bodies})
    constants = ("false", "true")
    keywords = sorted(set(KEYWORDS) - set(constants) - set(layers) - set(parts))
    return {
        "keywords": tuple(keywords),
        "constants": constants,
        "layers": tuple(sorted(layers)),
        "priors": tuple(sorted(prior_kinds())),
        "objectives": tuple(sorted(objective_kinds())),
        "parts": tuple(parts),
        "inputs": tuple(sorted(set(INPUT_KINDS) | set(CONTEXT_KINDS))),
    }


def _words(words: tuple[str, ...]) -> str:
    return r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=lambda w: (-len(w), w))) + r")\b"


def _captures(*scopes: str) -> dict:
    return {str(i): {"name": f"{scope}.flowdsl"} for i, scope in enumerate(scopes, 1)}


def textmate_grammar() -> dict:
    """The TextMate grammar (``source.flowdsl``) as a JSON-ready dict; only ``match`` rules, so
    that the same regular expressions mean the same in Oniguruma (VS Code) and Python's ``re``."""
    v = vocabulary()
    patterns = [
        {"name": "comment.line.number-sign.flowdsl", "match": COMMENT},
        {"name": "string.quoted.double.flowdsl", "match": STRING},
        {
            "match": rf"\b(flow|block)\s+({NAME})",
            "captures": _captures("keyword.other.declaration", "entity.name.function"),
        },
        {"name": "variable.parameter.reference.flowdsl", "match": rf"\$\s*{NAME}"},
        {"name": "constant.language.boolean.flowdsl", "match": _words(v["constants"])},
        # a keyword written as an argument name (``coupling(context=false)``) is an argument name
        {"name": "keyword.control.flowdsl", "match": _words(v["keywords"]) + r"(?!\s*=)"},
        {  # an enumeration value is a plain name even where it spells a kind (``net=conv``)
            "match": rf"({NAME})\s*(=)\s*(?!(?:true|false)\b)({NAME})\b(?!\s*\()",
            "captures": _captures("variable.parameter.argument", "keyword.operator", "variable.other.enum"),
        },
        {
            "match": rf"({NAME})\s*(=)",
            "captures": _captures("variable.parameter.argument", "keyword.operator"),
        },
        {"name": "support.function.layer.flowdsl", "match": _words(v["layers"])},
        {"name": "support.class.prior.flowdsl", "match": _words(v["priors"])},
        {"name": "support.class.objective.flowdsl", "match": _words(v["objectives"])},
        {"name": "keyword.other.part.flowdsl", "match": _words(v["parts"])},
        {"name": "support.type.input.flowdsl", "match": _words(v["inputs"])},
        {"name": "constant.numeric.float.flowdsl", "match": rf"(?<![A-Za-z0-9_]){FLOAT}"},
        {"name": "constant.numeric.integer.flowdsl", "match": rf"(?<![A-Za-z0-9_.]){NUMBER}(?![.eE0-9])"},
        {"name": "entity.name.function.call.flowdsl", "match": rf"{NAME}(?=\s*\()"},
        {"name": "variable.other.enum.flowdsl", "match": NAME},
        {"name": "punctuation.flowdsl", "match": r"[{}()\[\],]"},
    ]
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "name": "flowdsl",
        "scopeName": "source.flowdsl",
        "fileTypes": ["flow"],
        "comment": "Generated by `python -m flowdsl.highlight --write` from the kind registry; do not edit.",
        "patterns": patterns,
    }


GRAMMAR_PATH = Path("editors") / "vscode" / "syntaxes" / "flowdsl.tmLanguage.json"


def grammar_json() -> str:
    return json.dumps(textmate_grammar(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """``python -m flowdsl.highlight [--write [ROOT]]``: print the TextMate grammar, or write it
    to ROOT/editors/vscode/syntaxes/flowdsl.tmLanguage.json (ROOT: the current folder)."""
    if argv[:1] == ["--write"]:
        root = Path(argv[1]) if len(argv) > 1 else Path.cwd()
        path = root / GRAMMAR_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(grammar_json(), encoding="utf-8")
        print(f"wrote {path}")
    else:
        sys.stdout.write(grammar_json())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
