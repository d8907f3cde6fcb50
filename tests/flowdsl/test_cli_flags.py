"""Every command-line flag of every command: validated numeric types, help texts, user-error exits.

Issue #15: bad numbers (``--lr 1e39``, ``--seed -1``, ``--threads 100000``, ``--clip nan`` ...) used
to reach deep code (exit 2, a segfault, or a run that trains uphill with exit 0). Each now stops
at argument parsing with exit 1 and a message naming the flag. Issue #14: every option has help.
"""

from __future__ import annotations

import argparse
import math

import pytest
from annotated_types import Ge, Gt, Le, Lt

from flowdsl.cli import build_parser, main
from flowdsl.compiler.limits import LIMITS

BIG = str(10**9)

#: (command line, flag the message must name); every value is outside the range the spec language
#: (or LIMITS) allows for the same quantity
BAD = [
    # train: the spec's train(...) values and TrainConfig's own
    (["train", "s.flow", "--lr", "1e39"], "--lr"),
    (["train", "s.flow", "--lr", "inf"], "--lr"),
    (["train", "s.flow", "--lr", "nan"], "--lr"),
    (["train", "s.flow", "--lr", "0"], "--lr"),
    (["train", "s.flow", "--lr", "11"], "--lr"),
    (["train", "s.flow", "--seed", "-1"], "--seed"),
    (["train", "s.flow", "--seed", "1e23"], "--seed"),
    (["train", "s.flow", "--seed", str(2**64)], "--seed"),
    (["train", "s.flow", "--clip", "-1"], "--clip"),
    (["train", "s.flow", "--clip", "0"], "--clip"),
    (["train", "s.flow", "--clip", "nan"], "--clip"),
    (["train", "s.flow", "--weight-decay", "nan"], "--weight-decay"),
    (["train", "s.flow", "--weight-decay", "inf"], "--weight-decay"),
    (["train", "s.flow", "--weight-decay", "-0.1"], "--weight-decay"),
    (["train", "s.flow", "--threads", "0"], "--threads"),
    (["train", "s.flow", "--threads", "100000"], "--threads"),
    (["train", "s.flow", "--batch", "0"], "--batch"),
    (["train", "s.flow", "--batch", BIG], "--batch"),
    (["train", "s.flow", "--test-batch", "0"], "--test-batch"),
    (["train", "s.flow", "--steps", "-1"], "--steps"),
    (["train", "s.flow", "--steps", BIG], "--steps"),
    (["train", "s.flow", "--warmup", "-1"], "--warmup"),
    (["train", "s.flow", "--eval-every", "0"], "--eval-every"),
    (["train", "s.flow", "--checkpoint-every", "0"], "--checkpoint-every"),
    (["train", "s.flow", "--val-fraction", "1"], "--val-fraction"),
    (["train", "s.flow", "--val-fraction", "-0.1"], "--val-fraction"),
    (["train", "s.flow", "--max-time", "nan"], "--max-time"),
    (["train", "s.flow", "--max-time", "-1"], "--max-time"),
    (["train", "s.flow", "--log-every", "-1"], "--log-every"),
    (["train", "s.flow", "--sample-n", "-1"], "--sample-n"),
    (["train", "s.flow", "--sample-n", BIG], "--sample-n"),
    (["train", "s.flow", "--ema", "1"], "--ema"),
    (["train", "s.flow", "--ema", "nan"], "--ema"),
    (["train", "s.flow", "--kappa", "-1"], "--kappa"),
    (["train", "s.flow", "--eval-n", "1"], "--eval-n"),
    (["train", "s.flow", "--source-temperature", "0"], "--source-temperature"),
    (["train", "s.flow", "--source-temperature", "inf"], "--source-temperature"),
    # sample (mle and fdrl flags)
    (["sample", "run", "--n", "0"], "--n"),
    (["sample", "run", "--n", BIG], "--n"),
    (["sample", "run", "--seed", "-1"], "--seed"),
    (["sample", "run", "--temperature", "nan"], "--temperature"),
    (["sample", "run", "--temperature", "inf"], "--temperature"),
    (["sample", "run", "--temperature", "-0.5"], "--temperature"),
    (["sample", "run", "--flow-steps", "0"], "--flow-steps"),
    (["sample", "run", "--guidance", "nan"], "--guidance"),
    (["sample", "run", "--source-temperature", "-1"], "--source-temperature"),
    # export
    (["export", "s.flow", "--out", "o", "--batch", "0"], "--batch"),
    (["export", "s.flow", "--out", "o", "--batch", BIG], "--batch"),
    (["export", "s.flow", "--out", "o", "--tolerance", "nan"], "--tolerance"),
    (["export", "s.flow", "--out", "o", "--tolerance", "-1"], "--tolerance"),
    # explain
    (["explain", "s.flow", "--samples", "-1"], "--samples"),
    (["explain", "s.flow", "--samples", BIG], "--samples"),
    (["explain", "s.flow", "--threads", "0"], "--threads"),
    (["explain", "s.flow", "--threads", "100000"], "--threads"),
    (["explain", "s.flow", "--temperature", "nan"], "--temperature"),
    (["explain", "s.flow", "--t-high", "inf"], "--t-high"),
    (["explain", "s.flow", "--t-low", "0"], "--t-low"),
    (["explain", "s.flow", "--pairs", "0"], "--pairs"),
    (["explain", "s.flow", "--hole", "0"], "--hole"),
    (["explain", "s.flow", "--steps", "-1"], "--steps"),
    (["explain", "s.flow", "--kernel", "0"], "--kernel"),
    (["explain", "s.flow", "--repeats", "0"], "--repeats"),
    (["explain", "s.flow", "--fit", "-1"], "--fit"),
    (["explain", "s.flow", "--perturb", "nan"], "--perturb"),
    (["explain", "s.flow", "--seed", "-1"], "--seed"),
    (["explain", "s.flow", "--sizes", "8,x"], "--sizes"),
    (["explain", "s.flow", "--sizes", "8,0"], "--sizes"),
    # bench, bench-training
    (["bench", "s.flow", "--threads", "0"], "--threads"),
    (["bench", "s.flow", "--threads", "100000"], "--threads"),
    (["bench", "s.flow", "--batch", "0"], "--batch"),
    (["bench", "s.flow", "--repeats", "0"], "--repeats"),
    (["bench", "s.flow", "--acceptance-threads", "2,100000"], "--acceptance-threads"),
    (["bench", "s.flow", "--acceptance-threads", "0"], "--acceptance-threads"),
    (["bench-training", "--steps", "-1"], "--steps"),
    (["bench-training", "--mnist-steps", "-1"], "--mnist-steps"),
    # fuzz
    (["fuzz", "--n", "0"], "--n"),
    (["fuzz", "--seed", "-1"], "--seed"),
    (["fuzz", "--time-limit", "nan"], "--time-limit"),
    (["fuzz", "--time-limit", "0"], "--time-limit"),
    # fdrl-* commands
    (["fdrl-classifier", "--out", "c.safetensors", "--levels", "1"], "--levels"),
    (["fdrl-classifier", "--out", "c.safetensors", "--steps", "-1"], "--steps"),
    (["fdrl-classifier", "--out", "c.safetensors", "--seed", "-1"], "--seed"),
    (["fdrl-classifier", "--out", "c.safetensors", "--noise", "nan"], "--noise"),
    (["fdrl-classifier", "--out", "c.safetensors", "--adversarial", "-1"], "--adversarial"),
    (["fdrl-classifier", "--out", "c.safetensors", "--threads", "100000"], "--threads"),
    (["fdrl-eval", "run", "--n", "0"], "--n"),
    (["fdrl-eval", "run", "--seed", "1e23"], "--seed"),
    (["fdrl-eval", "run", "--flow-steps", "0"], "--flow-steps"),
    (["fdrl-eval", "run", "--batch", "-1"], "--batch"),
    (["fdrl-eval", "run", "--guidance", "inf"], "--guidance"),
    (["fdrl-eval", "run", "--source-temperature", "0"], "--source-temperature"),
    (["fdrl-export", "run", "--out", "o", "--batch", "0"], "--batch"),
    (["fdrl-export", "run", "--out", "o", "--tolerance", "nan"], "--tolerance"),
    # demo
    (["demo", "--steps", "-1"], "--steps"),
    (["demo", "--steps", BIG], "--steps"),
]


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1


@pytest.mark.parametrize("argv,flag", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_number_is_a_user_error(argv, flag, capsys):
    code = _exit_code(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "error:" in err and flag in err, err
    assert "Traceback" not in err and "internal error" not in err


@pytest.mark.parametrize(
    "argv,dest,value",
    [
        (["train", "s.flow", "--lr", "10"], "lr", 10.0),
        (["train", "s.flow", "--seed", "0"], "seed", 0),
        (["train", "s.flow", "--val-fraction", "0"], "val_fraction", 0.0),
        (["train", "s.flow", "--sample-n", "0"], "sample_n", 0),
        (["train", "s.flow", "--steps", "0"], "steps", 0),
        (["train", "s.flow", "--threads", str(LIMITS.max_threads)], "threads", LIMITS.max_threads),
        (["train", "s.flow", "--batch", str(LIMITS.max_batch)], "batch", LIMITS.max_batch),
        (["fdrl-eval", "run", "--batch", "0"], "batch", 0),
        (["bench", "s.flow", "--acceptance-threads", "1, 2"], "acceptance_threads", [1, 2]),
        (["explain", "s.flow", "--sizes", "8,16"], "sizes", [8, 16]),
    ],
)
def test_range_ends_are_accepted(argv, dest, value):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value


def test_limits_are_read_when_parsing(monkeypatch, capsys):
    monkeypatch.setattr(LIMITS, "max_threads", 3)
    assert _exit_code(["bench", "s.flow", "--threads", "4"]) == 1
    assert "FLOWDSL_MAX_THREADS" in capsys.readouterr().err


def _walk(parser: argparse.ArgumentParser, path: str = "flowdsl"):
    """(command path, action) for every action of the parser and of every subparser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")
        else:
            yield path, action


def _every_action():
    return list(_walk(build_parser()))


def test_the_walk_reaches_every_command():
    commands = {p for p, _ in _every_action()}
    for name in ("check", "graph", "export", "demo", "train", "sample", "explain", "bench", "bench-training"):
        assert f"flowdsl {name}" in commands
    assert "flowdsl fuzz" in commands and any(c.startswith("flowdsl fdrl-") for c in commands)


def test_every_option_has_help():
    missing = [
        f"{path} {'/'.join(a.option_strings) or a.dest}"
        for path, a in _every_action()
        if a.help is not argparse.SUPPRESS and not (a.help or "").strip()
    ]
    assert not missing, "options without help text: " + ", ".join(missing)


def test_no_numeric_flag_uses_a_bare_int_or_float():
    """int/float accept nan, inf, negatives and any size; the flowdsl.cliargs types do not."""
    bare = [f"{path} {'/'.join(a.option_strings) or a.dest}" for path, a in _every_action() if a.type in (int, float)]
    assert not bare, "numeric flags without a validated type: " + ", ".join(bare)


def _bounds(model, field: str) -> tuple[float | None, bool, float | None, bool]:
    lo = hi = None
    lo_open = hi_open = False
    for m in model.model_fields[field].metadata:
        if isinstance(m, Ge):
            lo = m.ge
        elif isinstance(m, Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, Le):
            hi = m.le
        elif isinstance(m, Lt):
            hi, hi_open = m.lt, True
    return lo, lo_open, hi, hi_open


def _accepts(argv: list[str]) -> bool:
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        return False
    return True


@pytest.mark.parametrize(
    "flag,field",
    [("--batch", "batch"), ("--lr", "lr"), ("--steps", "steps"), ("--seed", "seed"), ("--clip", "clip")]
    + [(f"--{f.replace('_', '-')}", f) for f in ("weight_decay", "warmup", "eval_every", "checkpoint_every")]
    + [("--test-batch", "test_batch")],
)
def test_train_flags_have_the_ranges_of_the_spec_language(flag, field, capsys):
    """The flag's lower bound is the language's ``train(...)`` bound; its upper bound is the
    language's or tighter (batches: LIMITS.max_batch)."""
    from flowdsl.schema import TrainSpec

    lo, lo_open, hi, hi_open = _bounds(TrainSpec, field)
    is_int = TrainSpec.model_fields[field].annotation is int

    def text(v):
        return str(int(v)) if is_int else repr(float(v))

    step = 1 if is_int else 1e-9
    assert lo is not None
    assert _accepts(["train", "s.flow", flag, text(lo + step if lo_open else lo)])
    assert not _accepts(["train", "s.flow", flag, text(lo if lo_open else lo - step)])
    if hi is not None:
        assert not _accepts(["train", "s.flow", flag, text(hi + step if not hi_open else hi)])
    if not is_int:
        assert not _accepts(["train", "s.flow", flag, "nan"]) and not _accepts(["train", "s.flow", flag, "inf"])
    capsys.readouterr()


def test_fdrl_flow_steps_have_the_language_lower_bound():
    from flowdsl.compiler.kinds.fdrl import FDRLObjectiveKind

    lo = _bounds(FDRLObjectiveKind.Args, "steps")[0]
    assert _accepts(["sample", "run", "--flow-steps", str(lo)])
    assert not _accepts(["sample", "run", "--flow-steps", str(lo - 1)])
    assert math.isfinite(lo)


def test_every_help_page_renders():
    """argparse formats help lazily (a stray % in a help text fails only at --help)."""

    def pages(parser, path="flowdsl"):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from pages(sub, f"{path} {name}")

    for path, parser in pages(build_parser()):
        text = parser.format_help()
        assert text.startswith("usage:") and len(text) > 40, path
