"""Fusion rules for ``model.fuse()`` (one file per rule; importing this package registers them).

    rule_positions       compose_positions      order 10
    rule_channel_linear  merge_channel_linear   order 20
    rule_coupling        coupling_inference     order 30
    rule_freeze          freeze                 order 90

The contract of a rule and the engine that runs them are in ``flowdsl.compiler.passes.fusion``;
the emitted modules are in ``channel_ops``, ``rule_positions`` (PositionGather) and
``rule_coupling``; ``flow.FusedFlow`` is the module ``model.fuse()`` returns; ``memory`` has the
invertible-memory (recompute-from-outputs) training option.
"""
from __future__ import annotations

from flowdsl.runtime.fusion import rule_channel_linear, rule_coupling, rule_freeze, rule_positions  # noqa: F401

__all__: list[str] = []
