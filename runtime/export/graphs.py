"""The modules that become ``forward.onnx`` and ``inverse.onnx``, and the example contexts.

    forward.onnx   x (B, *input_shape) [, context]  ->  z (B, *input_shape), logdet (B,), log_prob (B,)
    inverse.onnx   z (B, *input_shape) [, context]  ->  x (B, *input_shape), log_prob (B,)

``log_prob`` = log p_prior(z | c) + Σ log|det ∂z/∂x| in nats. In the inverse direction it is
computed in the same pass as x (``model.inverse_with_log_prob``: every layer's inverse also returns
its forward log-det at the point it returns), the formula of ``model.sample(return_log_prob=True)``.

The ``context`` input exists only for a conditional model (``model.context_kind`` not None), with
the batch dimension of ``x``/``z``: labels int64 (B,), vectors float32 (B, D), images float32
(B, C, H, W). The model encodes it inside the graph (label table, embedding net).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "ForwardGraph",
    "InverseGraph",
    "inverse_with_log_prob",
    "context_kind",
    "example_context",
    "context_signature",
    "forward_with_log_prob",
    "prior_uses_context",
    "strict_labels",
]


def context_kind(model: nn.Module) -> str | None:
    """``"label"``, ``"vector"``, ``"image"``, or None for an unconditional model."""
    return getattr(model, "context_kind", None)


def context_signature(model: nn.Module) -> str | None:
    """The ``context`` input as text (``flowdsl.context`` in the metadata; the export command's
    output), e.g. ``"label: int64 (B,), classes 0..9"``; None when unconditional."""
    kind = context_kind(model)
    if kind is None:
        return None
    if kind == "label":
        return f"label: int64 (B,), classes 0..{int(model.context_classes) - 1}"
    dims = ", ".join(str(int(d)) for d in model.context_shape)
    return f"{kind}: float32 (B, {dims})"


def example_context(model: nn.Module, batch: int, generator: torch.Generator) -> Tensor | None:
    """A random context batch of the model's kind (None when unconditional): labels uniform in
    0…K−1 (every class once when ``batch`` ≥ K), vectors N(0, 1), images U[0, 1)."""
    kind = context_kind(model)
    if kind is None:
        return None
    if kind == "label":
        k = int(model.context_classes)
        order = torch.randperm(k, generator=generator)
        extra = torch.randint(0, k, (max(batch - k, 0),), generator=generator)
        return torch.cat([order, extra])[:batch].to(torch.int64)
    shape = tuple(model.context_shape)
    if kind == "vector":
        return torch.randn((batch, *shape), generator=generator)
    return torch.rand((batch, *shape), generator=generator)


def strict_labels(model: nn.Module, context: Tensor | None) -> Tensor | None:
    """Label contexts with every negative label replaced by K, so that onnxruntime rejects a label
    outside 0…K−1 as PyTorch does: ONNX ``Gather`` (the label tables) fails on an index ≥ K but
    counts a negative one from the end. Other contexts pass unchanged."""
    if context is None or context_kind(model) != "label":
        return context
    return torch.where(context < 0, torch.full_like(context, int(model.context_classes)), context)


def inverse_with_log_prob(model: nn.Module, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(x, log p(x)) from one inverse pass: ``model.inverse_with_log_prob`` (every step's inverse
    with its forward log-det at the point it returns, plus the prior's log-density of z), called
    without ``context`` for an unconditional model."""
    if context is None:
        return model.inverse_with_log_prob(z)
    return model.inverse_with_log_prob(z, context=context)


def prior_uses_context(model: nn.Module) -> bool:
    """Whether the model's prior is conditional (``prior ...(conditional=true)``)."""
    return bool(getattr(model.prior, "uses_context", False))


def forward_with_log_prob(model: nn.Module, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor, Tensor]:
    """(z, logdet, log_prob) of ``x``: one forward pass, the prior scored at z.

    A conditional prior takes the encoded context (``model.encode_context``: the model's own
    validation and encoder, so the label table / embedding net is the one the steps see)."""
    if context is None:
        z, logdet = model(x)
        cv = None
    else:
        z, logdet = model(x, context=context)
        cv = model.encode_context(context, x.shape[0], x.device, x.dtype) if prior_uses_context(model) else None
    zz = z if z.dtype == logdet.dtype else z.to(logdet.dtype)
    lp = model.prior.log_prob(zz) if cv is None else model.prior.log_prob(zz, cv)
    return z, logdet, lp + logdet


class ForwardGraph(nn.Module):
    """x [, context] -> (z, logdet, log_prob)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        return forward_with_log_prob(self.model, x, strict_labels(self.model, context))


class InverseGraph(nn.Module):
    """z [, context] -> (x, log_prob), one inverse pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return inverse_with_log_prob(self.model, z, strict_labels(self.model, context))
