"""Fuzzed front end: every input is accepted or rejected with a located FlowDSLError, fast."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowdsl
from flowdsl.fuzz import check_input, mutate, run_fuzz, seed_specs


def test_five_thousand_mutated_specs():
    t0 = time.perf_counter()
    rep = run_fuzz(5000, seed=12345, time_limit=2.0)
    elapsed = time.perf_counter() - t0
    print(rep.summary(), f"in {elapsed:.1f} s")
    assert rep.inputs == 5000
    assert not rep.failures, rep.failures[:3]
    assert not rep.slow, rep.slow[:3]
    assert rep.rejected > 0 and rep.accepted > 0


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
        "flow t { input vector(dim=2) " + "actnorm " * 20_000 + "}",
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
