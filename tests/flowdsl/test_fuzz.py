"""Fuzzed front end: every input is accepted or rejected with a located FlowDSLError, fast."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowdsl
from flowdsl.fuzz import FAMILIES, check_input, generate, mutate, run_fuzz, seed_specs


def test_five_thousand_mutated_and_generated_specs():
    """5,000 inputs, a tenth of them from the large-input families: no exception other than a
    located FlowDSLError. (The time per input is the fuzz command's report, not asserted here.)"""
    t0 = time.perf_counter()
    rep = run_fuzz(5000, seed=12345, time_limit=2.0, family_fraction=0.1, max_size=1500)
    elapsed = time.perf_counter() - t0
    print(rep.summary(), f"in {elapsed:.1f} s")
    assert rep.inputs == 5000
    assert not rep.failures, rep.failures[:3]
    assert rep.rejected > 0 and rep.accepted > 0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_generated_family_is_accepted_or_located(family):
    rng = random.Random(7)
    outcomes = set()
    for _ in range(12):
        outcomes.add(check_input(generate(rng, 3000, family), compile_small=False))
    assert outcomes <= {"accepted", "rejected"}


@pytest.mark.parametrize(
    "family, size, message",
    [
        ("huge_list", 30_000, "tokens"),
        ("many_args", 10_000, "tokens"),
        ("many_blocks", 6_000, "tokens"),
        ("many_lines", 30_000, "tokens"),
    ],
)
def test_generated_inputs_over_the_token_limit_are_refused_before_parsing(family, size, message):
    text = FAMILIES[family](random.Random(0), size)
    with pytest.raises(flowdsl.FlowDSLError, match=message) as e:
        flowdsl.parse(text, filename="big.flow")
    assert e.value.line >= 1 and "FLOWDSL_MAX_TOKENS" in str(e.value)


def test_unterminated_string_of_escaped_quotes_is_linear():
    # a regex that fails at every quote of 40,000 escaped quotes ran for minutes; one that stops at
    # the end of the line is linear (well under a second here)
    text = 'flow f {\n  input vector(dim=2)\n  ' + '\\"' * 20_000 + "\n  prior gaussian\n}\n"
    t0 = time.perf_counter()
    with pytest.raises(flowdsl.ParseError):
        flowdsl.parse(text)
    assert time.perf_counter() - t0 < 30  # a hang guard, not a benchmark


@pytest.mark.parametrize("depth", [1000, 1500])
def test_block_chain_deep_expands_without_recursion_error(depth):
    blocks = "\n".join(f"block b{i}(h=4) {{ b{i + 1}(h=$h) }}" for i in range(depth - 1))
    text = blocks + f"\nblock b{depth - 1}(h=4) {{ coupling(hidden=$h) }}\nflow f {{ input vector(dim=2) b0(h=6) }}\n"
    spec = flowdsl.parse(text)
    (layer,) = spec.graph.layers()
    assert layer.args.hidden == 6


@settings(max_examples=300)
@given(st.randoms(use_true_random=False), st.integers(0, 1000))
def test_hypothesis_mutations(rnd, k):
    seeds = seed_specs()
    data = mutate(seeds[k % len(seeds)], rnd)
    check_input(data, compile_small=False)


@pytest.mark.parametrize(
    "data",
    [
        "flow t { input vector(dim=2) " + "repeat 2 { " * 5000 + "actnorm" + " }" * 5000 + " }",
        "flow t { input vector(dim=2) permute(seed=" + "[" * 3000 + "1" + "]" * 3000 + ") }",
        "flow " + "x" * 200_000 + " { input vector(dim=2) }",
        b"flow t { input vector(dim=2) \x00 }",
        b"\xff\xfe\xfd",
        "flow t { input vector(dim=2) coupling(hidden=" + "9" * 5000 + ") }",
        "flow t { input vector(dim=2) " + "actnorm " * 40_000 + "}",  # over FLOWDSL_MAX_TOKENS: refused unparsed
        "block a(n=2) { repeat $n { a(n=$n) } }\nflow t { input vector(dim=2) a() }",
        "\n" * 100_000 + "flow",
        "flow t { input image(channels=1, height=65536, width=65536) }",
    ],
    ids=[
        "deep-repeat",
        "deep-list",
        "long-name",
        "nul",
        "bytes",
        "huge-int",
        "many-layers",
        "recursive-block",
        "newlines",
        "huge-image",
    ],
)
def test_hostile_inputs_are_rejected_quickly(data):
    t0 = time.perf_counter()
    with pytest.raises(flowdsl.FlowDSLError) as info:
        flowdsl.parse(data, filename="h.flow")
    assert time.perf_counter() - t0 < 2.0
    assert info.value.line >= 1


def test_seed_specs_are_valid():
    for text in seed_specs():
        try:
            flowdsl.parse(text)
        except flowdsl.errors.NotAvailableError:
            pass


def test_fuzz_command_runs(capsys):
    from flowdsl.cli import main

    assert main(["fuzz", "--n", "200", "--seed", "3"]) == 0
    assert "200 inputs" in capsys.readouterr().out
