"""The flowdsl grammar, shipped as package data (``flowdsl.grammar``)."""

from __future__ import annotations

from importlib import resources

__all__ = ["GRAMMAR_FILE", "grammar_text"]

GRAMMAR_FILE = "flowdsl.lark"


def grammar_text() -> str:
    """Return the text of the lark grammar."""
    return resources.files(__name__).joinpath(GRAMMAR_FILE).read_text(encoding="utf-8")
