"""flowdsl.compiler: the bijector-graph IR, the kind registry and the named passes."""

from flowdsl.compiler.context import CONTEXT_EMBED

__all__ = ["CONTEXT_EMBED"]
