"""``model.fuse()``: the inference form of a compiled flow.

The fusion rules of ``flowdsl.runtime.fusion`` run over the model's FlowGraph and its modules
together (``flowdsl.compiler.passes.fusion.run_fusion``), in order:

    compose_positions     runs of squeezes composed / cancelled / absorbed by the latent layout
    merge_channel_linear  actnorm, 1×1 convolutions, permutations, channel butterflies -> one map
    coupling_inference    couplings: log s = 4σ(r) − 2 (sigmoid, not tanh), conv+ReLU fused (CPU)
    freeze                every other layer with weights -> its frozen() form

All weight-only quantities (W, W⁻¹, constant log-dets, spectra, block inverses) are computed
once here, in float64, and stored as buffers in the module's dtype. The result is a
:class:`~flowdsl.runtime.fusion.flow.FusedFlow`: an independent copy in eval mode (later
training of the original does not change it), with the same forward/inverse/log_prob.
"""
from __future__ import annotations

import copy
from typing import Any

import torch

from flowdsl.runtime.bijector import Chain
from flowdsl.runtime.fusion.flow import FusedFlow
from flowdsl.runtime.model import FlowModel

__all__ = ["fuse_model"]


def _assemble(node: Any, module: Any, bodies: dict[str, list[Any]] | None) -> Any:
    """A composite module (``rg``) around its fused bodies (``labels``/``bodies`` protocol)."""
    if bodies is None:
        return module.frozen().eval()
    new = copy.deepcopy(module)
    for label, mods in bodies.items():
        idx = list(new.labels).index(label)
        if mods or isinstance(new.bodies[idx], Chain):
            new.bodies[idx] = Chain(list(mods))
    return new.eval()


def fuse_model(model: FlowModel, channels_last: bool = False, cuda_graph: bool = False) -> FusedFlow:
    """The fused inference module of ``model`` (see the module docstring).

    Args:
        model: a compiled flow (``flowdsl.compile``), trained or not.
        channels_last: convert 4-D inputs to channels-last memory format on entry (default
            False: on the CPU the fused coupling convolutions switch to channels-last
            internally, which measured faster than converting the whole chain).
        cuda_graph: capture and replay CUDA graphs per input shape (untested on GPU; see
            ``FusedFlow``).
    """
    from flowdsl.compiler.passes.fusion import run_fusion

    src = copy.deepcopy(model).eval()
    graph = src.spec.graph
    steps = list(src.steps)
    with torch.no_grad():
        if list(graph.chain) == list(src.node_ids) and len(steps) == len(graph.chain):
            result = run_fusion(graph, steps, assemble=_assemble)
            steps, node_ids, fused_graph = result.modules, list(result.graph.chain), result.graph
        else:  # a model whose steps do not follow its spec's graph: freeze step by step
            result, fused_graph, node_ids = None, None, list(src.node_ids)
            steps = [s.frozen().eval() for s in steps]
    ref = next(iter(model.buffers()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    fused = FusedFlow(src.spec, steps, src.prior, node_ids, graph=fused_graph, fusion=result,
                      channels_last=channels_last, cuda_graph=cuda_graph)
    dtype = _float_dtype(model)
    fused = fused.to(device)
    fused._dtype_probe = fused._dtype_probe.to(dtype)
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused.eval()


def _float_dtype(model: torch.nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()
