"""Layer modules: one file per kind, each registering its lowering (``@lowering("name")``).

The modules are listed here explicitly; importing this package registers every built-in
lowering.
"""

from __future__ import annotations

from flowdsl.runtime.layers import (  # noqa: F401  (each import registers a lowering)
    actnorm,
    autoregressive,
    butterfly,
    conv,
    conv1x1,
    coupling,
    logit,
    permute,
    rg,
    split,
    squeeze,
)
from flowdsl.runtime.layers.lowering import layer_lowering, lowered_kinds, lowering, unregister_lowering

__all__ = ["lowering", "unregister_lowering", "layer_lowering", "lowered_kinds"]
