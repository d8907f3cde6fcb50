"""The flow's context (conditional flows), language side: the embedding width and the parameter
counts that the compiler and the runtime must agree on.

A file may declare one context after its input (``context label(classes=K)``,
``context vector(dim=D)``, ``context image(channels=C, height=H, width=W)``). The runtime encodes
it once per call with a model-level encoder into an embedding of :data:`CONTEXT_EMBED` = E
features, and every layer or prior that uses the context reads that embedding:

    label   (B,) long            -> (B, E)          nn.Embedding(K, E)                     K·E
    vector  (B, D) float         -> (B, E)          Linear(D→E), SiLU, Linear(E→E)         D·E + E + E·E + E
    image   (B, C, Hc, Wc) float -> (B, E, Hc, Wc)  Conv 3×3 (C→E, pad 1), SiLU, Conv 1×1 (E→E)
                                                                                           9·C·E + E + E·E + E

(:func:`encoder_param_count`). A coupling that uses the context concatenates the context features
at its input shape to its conditioner's input, so the conditioner's input grows by
:func:`conditioner_extra_inputs` features:

    vector layer (D,)                       E          the (B, E) embedding (an image embedding is
                                                       average-pooled to (B, E))
    image layer (C, h, w), net=conv/resnet  E channels  the (B, E, h, w) feature map (vector
                                                       embeddings broadcast over h, w; image ones
                                                       average-pooled or nearest-upsampled to h, w)
    image layer (C, h, w), net=mlp          E·h·w      that feature map, flattened

A conditional prior (``gaussian``/``laplace`` with ``conditional=true``) has a context-dependent
mean and log-scale per latent entry (numel = the input's entry count) instead of the learned
constant ones (:func:`conditional_prior_param_count`):

    label          per-class tables of mean and log-scale, K × 2 × numel
    vector, image  a zero-initialised Linear(E → 2·numel) with bias on the (B, E) embedding
                   (image embeddings average-pooled first): E·2·numel + 2·numel

Torch-free: the runtime (``flowdsl.runtime.context``) imports these, never the other way round.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CONTEXT_EMBED",
    "CONTEXT_KINDS",
    "encoder_param_count",
    "conditioner_extra_inputs",
    "conditional_prior_param_count",
]

#: E, the width of the context embedding every conditioned layer and prior reads
CONTEXT_EMBED = 32

#: the context kinds of the language and their arguments, in the order they are written
CONTEXT_KINDS: dict[str, tuple[str, ...]] = {
    "label": ("classes",),
    "vector": ("dim",),
    "image": ("channels", "height", "width"),
}


def encoder_param_count(context: Any, embed: int = CONTEXT_EMBED) -> int:
    """Trainable parameters of the model-level context encoder for a ``ContextSpec`` (0 for None)."""
    if context is None:
        return 0
    E = embed
    if context.kind == "label":
        return context.classes * E
    if context.kind == "vector":
        return context.dim * E + E + E * E + E
    return 9 * context.channels * E + E + E * E + E


def conditioner_extra_inputs(shape: tuple[int, ...], net: str, embed: int = CONTEXT_EMBED) -> int:
    """How many inputs the context adds to a coupling conditioner acting at ``shape`` with ``net``:
    E for vectors, E channels for conv/resnet nets on images, E·h·w for an mlp on images."""
    if len(shape) == 1:
        return embed
    if net == "mlp":
        spatial = 1
        for d in shape[1:]:
            spatial *= int(d)
        return embed * spatial
    return embed


def conditional_prior_param_count(context: Any, numel: int, embed: int = CONTEXT_EMBED) -> int:
    """Trainable parameters of a conditional prior's mean and log-scale for ``numel`` latent entries."""
    if context is None:
        return 0
    if context.kind == "label":
        return context.classes * 2 * numel
    return embed * 2 * numel + 2 * numel
