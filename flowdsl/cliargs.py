"""Validated command-line values: every numeric flag is checked like the spec's values.

argparse calls these as ``type=`` functions; a bad value raises ``argparse.ArgumentTypeError``,
which :class:`FlowArgumentParser` turns into a usage message and exit 1 (a user error; exit 2
is kept for internal errors). Torch-free, so ``flowdsl check`` stays light.

    p.add_argument("--lr", type=positive_float(maximum=10.0))
    p.add_argument("--seed", type=seed)
    p.add_argument("--batch", type=int_range(1, LIMITS.max_batch))
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, NoReturn

__all__ = [
    "FlowArgumentParser",
    "int_range",
    "float_range",
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "nonnegative_float",
    "seed",
    "MAX_SEED",
    "MAX_STEPS",
    "limited_int",
    "thread_count",
    "batch_size",
    "sample_count",
    "sample_count_or_zero",
    "batch_size_or_zero",
    "steps",
    "int_list",
    "name_list",
]

#: largest seed torch's generators take (``torch.manual_seed`` accepts [-2**63, 2**64))
MAX_SEED = 2**63 - 1
#: most training steps, as the language's ``train(steps=...)`` (``flowdsl.schema.TrainSpec``)
MAX_STEPS = 100_000_000


class FlowArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors exit 1 (user error), not argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _parse_int(text: str) -> int:
    try:
        return int(str(text).strip().replace("_", ""), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_range(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [minimum, maximum] (either bound may be None)."""

    def parse(text: str) -> int:
        value = _parse_int(text)
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:,}, got {value:,}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,}, got {value:,}")
        return value

    parse.__name__ = "whole number"
    return parse


def float_range(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    open_min: bool = False,
    open_max: bool = False,
) -> Callable[[str], float]:
    """An argparse type: a finite number in [minimum, maximum] (``open_min``: > minimum,
    ``open_max``: < maximum)."""

    def parse(text: str) -> float:
        value = _parse_float(text)
        if minimum is not None and (value <= minimum if open_min else value < minimum):
            word = "greater than" if open_min else "at least"
            raise argparse.ArgumentTypeError(f"must be {word} {minimum:g}, got {value:g}")
        if maximum is not None and (value >= maximum if open_max else value > maximum):
            word = "less than" if open_max else "at most"
            raise argparse.ArgumentTypeError(f"must be {word} {maximum:g}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def positive_int(maximum: int | None = None) -> Callable[[str], int]:
    """A whole number ≥ 1 (and ≤ maximum)."""
    return int_range(1, maximum)


def nonnegative_int(maximum: int | None = None) -> Callable[[str], int]:
    """A whole number ≥ 0 (and ≤ maximum)."""
    return int_range(0, maximum)


def positive_float(maximum: float | None = None) -> Callable[[str], float]:
    """A finite number > 0 (and ≤ maximum)."""
    return float_range(0.0, maximum, open_min=True)


def nonnegative_float(maximum: float | None = None) -> Callable[[str], float]:
    """A finite number ≥ 0 (and ≤ maximum)."""
    return float_range(0.0, maximum)


#: a random seed: a whole number in [0, 2**63 - 1]
seed = int_range(0, MAX_SEED)
seed.__name__ = "seed"


_LIMIT_WORDS = {"max_threads": "threads", "max_batch": "per batch", "max_samples": "samples"}


def limited_int(name: str, minimum: int = 1) -> Callable[[str], int]:
    """An argparse type: a whole number in [minimum, LIMITS.<name>] (``name``: ``max_threads``,
    ``max_batch``, ``max_samples``, ...), the limit read when the flag is parsed (so a changed
    ``LIMITS`` or its environment variable applies)."""
    what = _LIMIT_WORDS.get(name, "")

    def parse(text: str) -> int:
        from flowdsl.compiler.limits import LIMITS

        limit = getattr(LIMITS, name)
        value = _parse_int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value:,}")
        if value > limit:
            env = f"FLOWDSL_{name.upper()}"
            raise argparse.ArgumentTypeError(
                f"must be at most {limit:,}{' ' + what if what else ''} ({env}), got {value:,}"
            )
        return value

    parse.__name__ = "whole number"
    return parse


#: a thread count: 1 .. LIMITS.max_threads
thread_count = limited_int("max_threads")
#: a batch size: 1 .. LIMITS.max_batch
batch_size = limited_int("max_batch")
#: a number of samples: 1 .. LIMITS.max_samples
sample_count = limited_int("max_samples")
#: a number of samples where 0 means none: 0 .. LIMITS.max_samples
sample_count_or_zero = limited_int("max_samples", minimum=0)
#: a batch size where 0 means "all at once": 0 .. LIMITS.max_batch
batch_size_or_zero = limited_int("max_batch", minimum=0)
#: a number of training steps: 0 .. MAX_STEPS (as ``train(steps=...)``)
steps = int_range(0, MAX_STEPS)


def int_list(item: Callable[[str], int]) -> Callable[[str], list[int]]:
    """An argparse type: a comma-separated list of whole numbers, each checked by ``item``
    (empty text gives an empty list)."""

    def parse(text: str) -> list[int]:
        out = []
        for part in str(text).split(","):
            if not part.strip():
                continue
            try:
                out.append(item(part))
            except argparse.ArgumentTypeError as e:
                raise argparse.ArgumentTypeError(f"{part.strip()!r}: {e}") from None
        return out

    parse.__name__ = "list"
    return parse


def name_list(known: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: a comma list of names, each one of ``known`` (at least one)."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in str(text).split(",") if n.strip()]
        bad = [n for n in names if n not in known]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {'name' if len(bad) == 1 else 'names'} {', '.join(map(repr, bad))}; known: {', '.join(known)}"
                if bad
                else f"give at least one of {', '.join(known)}"
            )
        return names

    parse.__name__ = "list"
    return parse
