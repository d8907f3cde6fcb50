"""``model.fuse()``: the inference form of a compiled flow.

Every step is replaced by its ``frozen()`` form (weight-only quantities — W, W⁻¹, constant
log-dets — computed once in float64 and stored as buffers in the module's dtype); the result is
an independent copy in eval mode, so later training of the original does not change it.
"""
from __future__ import annotations

import copy

import torch

from flowdsl.runtime.model import FlowModel

__all__ = ["fuse_model"]


def fuse_model(model: FlowModel) -> FlowModel:
    src = copy.deepcopy(model)
    with torch.no_grad():
        steps = [s.frozen() for s in src.steps]
    fused = FlowModel(src.spec, steps, src.prior, src.node_ids, fused=True)
    ref = next(iter(model.buffers()), None)
    if ref is not None:
        fused = fused.to(ref.device)
    return fused.eval()
