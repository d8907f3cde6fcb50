"""Fusion for ``model.fuse()``: the rules (``rules/``, one file per rule), the modules they emit
(``ops/``) and the entry point (``fuse.fuse_steps``, called by ``FlowModel.fuse``, which wraps
the result in ``flowdsl.runtime.model.FusedFlow``).

    rules/positions       compose_positions      order 10
    rules/channel_linear  merge_channel_linear   order 20
    rules/coupling        coupling_inference     order 30
    rules/freeze          freeze                 order 90
"""

from __future__ import annotations

__all__: list[str] = []
