"""``model.fuse()``: the inference form of a compiled flow.

The fusion rules of ``flowdsl.runtime.fusion`` run over the model's FlowGraph and its modules
together (``flowdsl.compiler.passes.fusion.run_fusion``), in order:

    compose_positions     runs of squeezes composed / cancelled / absorbed by the latent layout
    merge_channel_linear  actnorm, 1×1 convolutions, permutations, channel butterflies -> one map
    coupling_inference    couplings: log s = 4σ(r) − 2 (sigmoid, not tanh), conv+ReLU fused (CPU)
    freeze                every other layer with weights -> its frozen() form

Conditional flows: the context encoder is copied and frozen with the rest. With a label
context, each coupling's and autoregressive layer's copy is handed the encoder's embedding table
before the rules run, so ``coupling_inference`` (mlp conditioners) and ``autoregressive_inference``
can fold the per-class constant part of the first layer (W_e·e_k + b for every class k) into a
table indexed by the raw label.

All weight-only quantities (W, W⁻¹, constant log-dets, spectra, block inverses) are computed
once here, in float64, and stored as buffers in the module's dtype. The result is a
:class:`~flowdsl.runtime.model.FusedFlow`: an independent copy in eval mode (later
training of the original does not change it), with the same forward/inverse/log_prob.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from flowdsl.runtime.bijector import Chain

__all__ = ["fuse_steps"]


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


def _hand_label_table(model: Any) -> None:
    """Give every context-reading coupling and autoregressive layer of ``model`` (a copy) the
    label embedding table (K, E) as the plain attribute ``label_embedding`` (read by the
    ``coupling_inference`` and ``autoregressive_inference`` rules only)."""
    from flowdsl.runtime.layers.autoregressive import Autoregressive
    from flowdsl.runtime.layers.coupling import Coupling

    info = getattr(model, "context_info", None)
    if info is None or info.kind != "label":
        return
    table = model.context_encoder.net.weight.detach()
    for m in model.modules():
        if isinstance(m, (Coupling, Autoregressive)) and m.uses_context:
            m.__dict__["label_embedding"] = table


def fuse_steps(model: Any) -> tuple[Any, Any, Any]:
    """Run the fusion rules over a copy of ``model``'s graph and modules (in eval mode).

    Returns the fusion pass result (``graph``: the fused FlowGraph, ``modules``: the inference
    modules, one per fused node, and the log of every rewrite and refusal), the copied prior and
    the copied context encoder (None when unconditional; frozen, eval mode); ``FlowModel.fuse``
    wraps them in a ``FusedFlow``. The original model is not touched.
    """
    import flowdsl.runtime.fusion.rules  # noqa: F401  (registers the built-in rules)
    from flowdsl.compiler.passes.fusion import run_fusion

    src = copy.deepcopy(model).eval()
    _hand_label_table(src)
    with torch.no_grad():
        result = run_fusion(src.graph, list(src.steps), assemble=_assemble)
    encoder = getattr(src, "context_encoder", None)
    if encoder is not None:
        for p in encoder.parameters():
            p.requires_grad_(False)
    return result, src.prior, encoder
