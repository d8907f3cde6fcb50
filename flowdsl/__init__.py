"""flowdsl: a declarative graph compiler for normalizing-flow architectures."""
__version__ = "0.1.0"
