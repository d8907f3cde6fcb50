"""The fusion rules, listed by explicit import (their order is ``FusionRule.order``)."""

from __future__ import annotations

from flowdsl.runtime.fusion.rules import autoregressive, channel_linear, coupling, freeze, positions  # noqa: F401

__all__: list[str] = []
