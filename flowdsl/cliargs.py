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
]

#: largest seed torch's generators take (``torch.manual_seed`` accepts [-2**63, 2**64))
MAX_SEED = 2**63 - 1


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
) -> Callable[[str], float]:
    """An argparse type: a finite number in [minimum, maximum] (``open_min``: > minimum)."""

    def parse(text: str) -> float:
        value = _parse_float(text)
        if minimum is not None and (value <= minimum if open_min else value < minimum):
            word = "greater than" if open_min else "at least"
            raise argparse.ArgumentTypeError(f"must be {word} {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {value:g}")
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
