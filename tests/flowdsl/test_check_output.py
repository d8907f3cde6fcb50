"""``flowdsl check``'s totals line: the prior's parameters counted (as ``train`` counts them), and
counted nouns in the singular for one (issue #14 item 10 and item 9)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import flowdsl
from flowdsl.cli import main
from flowdsl.wording import plural

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.flow"))


def _check_totals(path: Path, capsys) -> str:
    assert main(["check", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    return next(line for line in reversed(lines) if line.startswith("input "))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_check_total_equals_the_compiled_model_with_its_prior(path, capsys):
    """Reference: the parameters of the module ``flowdsl.compile`` builds (bijectors and prior),
    which is what ``train`` reports."""
    spec = flowdsl.load(path)
    model = flowdsl.compile(spec)
    real = sum(p.numel() for p in model.parameters())
    prior = sum(p.numel() for p in model.prior.parameters())
    assert spec.graph.model_params() == real
    assert spec.graph.prior_params() == prior
    totals = _check_totals(path, capsys)
    shown = int(re.search(r"; ([\d,]+) parameters?\b", totals).group(1).replace(",", ""))
    assert shown == real, totals
    if prior:
        assert f"{prior:,} in the prior" in totals


def test_a_learned_prior_is_in_the_glow_digits_total(capsys):
    """glow_digits: 76,096 in the bijectors plus 2·64 for gaussian(learned=true)."""
    totals = _check_totals(next(p for p in SPECS if p.stem == "glow_digits"), capsys)
    assert totals.endswith("76,224 parameters (76,096 in the bijectors, 128 in the prior)"), totals


@pytest.mark.parametrize(
    "n,noun,text",
    [
        (1, "latent output", "1 latent output"),
        (2, "latent output", "2 latent outputs"),
        (0, "bijector", "0 bijectors"),
        (1, "process", "1 process"),
        (4, "process", "4 processes"),
        (1, "entry", "1 entry"),
        (3, "entry", "3 entries"),
        (76224, "parameter", "76,224 parameters"),
    ],
)
def test_plural(n, noun, text):
    assert plural(n, noun) == text


def test_check_says_1_latent_output_and_1_bijector(tmp_path, capsys):
    spec = tmp_path / "one.flow"
    spec.write_text("flow one {\n  input vector(dim=2)\n  actnorm\n}\n", encoding="utf-8")
    totals = _check_totals(spec, capsys)
    assert "; 1 bijector;" in totals and "; 1 latent output;" in totals, totals
    assert "outputs" not in totals and "bijectors" not in totals


def test_check_explain_counts_in_the_singular(tmp_path, capsys):
    spec = tmp_path / "one.flow"
    spec.write_text("block b() {\n  actnorm\n}\nflow one {\n  input vector(dim=2)\n  b()\n}\n", encoding="utf-8")
    assert main(["check", "--explain", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "1 block: b; flow 'one' with 2 statements" in out, out
    assert "(s)" not in out


def test_werror_message_in_the_singular(tmp_path, capsys):
    spec = tmp_path / "odd.flow"  # a butterfly on an odd size is the identity: one warning
    spec.write_text("flow odd {\n  input vector(dim=3)\n  butterfly\n}\n", encoding="utf-8")
    assert main(["check", "--werror", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "1 warning treated as errors" in err, err


_HEDGED = re.compile(r"\b[A-Za-z]+\((?:s|es)\)")
#: report text whose headings key BENCHMARKS.md's sections (changing them would orphan old sections)
_REPORT_TEXT = ("runtime/bench/",)


def test_no_hedged_plurals_in_messages():
    """Messages count with flowdsl.wording.plural ("1 latent output", "2 threads"), not "thread(s)"."""
    import io
    import tokenize

    root = Path(__file__).resolve().parents[2]
    found = []
    for folder in ("flowdsl", "compiler", "runtime"):
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel.startswith(_REPORT_TEXT):
                continue
            for tok in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
                if tok.type == tokenize.STRING and _HEDGED.search(tok.string) and not tok.string.startswith('"""'):
                    found.append(f"{rel}:{tok.start[0]}: {_HEDGED.search(tok.string).group()}")
    assert not found, "hedged plurals in messages: " + "; ".join(found)


def test_the_parameter_limit_counts_the_prior(monkeypatch):
    """glow_digits has 76,096 parameters in its bijectors and 128 in its learned prior."""
    from flowdsl.compiler.limits import LIMITS
    from flowdsl.errors import ResourceLimitError

    path = next(p for p in SPECS if p.stem == "glow_digits")
    monkeypatch.setattr(LIMITS, "max_params", 76_100)
    with pytest.raises(ResourceLimitError, match="76,224 parameters"):
        flowdsl.load(path)


def test_the_parameter_limit_points_at_a_prior_larger_than_any_layer(monkeypatch, tmp_path):
    from flowdsl.compiler.limits import LIMITS
    from flowdsl.errors import ResourceLimitError

    spec = tmp_path / "p.flow"
    spec.write_text(
        "flow p {\n  input vector(dim=100)\n  permute\n  prior gaussian(learned=true)\n}\n", encoding="utf-8"
    )
    monkeypatch.setattr(LIMITS, "max_params", 150)
    with pytest.raises(ResourceLimitError) as info:
        flowdsl.load(spec)
    assert info.value.line == 4 and "the prior is here with 200" in info.value.message
