"""Weights of a trained run into a compiled model (``flowdsl export SPEC --checkpoint CKPT``).

Thin wrapper over :mod:`flowdsl.runtime.training.checkpoint`: the checkpoint (``.pt`` from
``flowdsl train``, its ``weights.safetensors``, or a run folder — best checkpoint first) is read
without executing code, verified, checked against the model's spec (same spec text hash), and
copied in all-or-nothing; any problem is a :class:`flowdsl.errors.CheckpointError`.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from flowdsl.runtime.training.checkpoint import check_spec, read_checkpoint, restore

__all__ = ["load_weights"]


def load_weights(model: nn.Module, checkpoint: str | os.PathLike, spec: Any = None) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model``; returns the checkpoint's fields.

    Args:
        model: a compiled model (``flowdsl.compile(spec)``).
        checkpoint: ``best.pt``/``last.pt``, ``weights.safetensors`` or a run folder.
        spec: the spec to check against (default: ``model.spec``).
    """
    ckpt = read_checkpoint(checkpoint)
    spec = spec if spec is not None else getattr(model, "spec", None)
    if spec is not None:
        check_spec(ckpt, spec, ckpt.get("path", str(checkpoint)))
    restore(model, ckpt)
    return ckpt
