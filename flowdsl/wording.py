"""Counted nouns for messages: ``plural(1, "latent output")`` is ``"1 latent output"``."""

from __future__ import annotations

__all__ = ["plural"]

_IRREGULAR = {"process": "processes", "entry": "entries", "refusal": "refusals", "pass": "passes"}


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``"{n:,} {noun}"`` with the noun's plural form unless ``n`` is 1 (or -1).

    The plural of the last word is ``many`` when given, else the word + "s" (a few irregular
    ones, e.g. "process" → "processes", "entry" → "entries", are known).
    """
    if abs(n) == 1:
        return f"{n:,} {noun}"
    if many is None:
        head, _, last = noun.rpartition(" ")
        many = (head + " " if head else "") + _IRREGULAR.get(last, last + "s")
    return f"{n:,} {many}"
