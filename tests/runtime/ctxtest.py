"""Shared helpers for the conditional-flow tests: contexts, their ContextValues, randomised modules."""

from __future__ import annotations

import torch

from flowdsl.runtime.context import ContextEncoder, ContextValue, EncodedContextInfo

__all__ = ["INFOS", "info", "raw_context", "context_value", "randomize", "slice_context"]


def info(kind: str, **kw) -> EncodedContextInfo:
    """An EncodedContextInfo as the model builds it from a ContextSpec."""

    class _Spec:
        pass

    spec = _Spec()
    spec.kind = kind
    for k, v in kw.items():
        setattr(spec, k, v)
    return EncodedContextInfo.from_spec(spec)


INFOS = {
    "label": info("label", classes=3),
    "vector": info("vector", dim=3),
    "image": info("image", channels=2, height=4, width=4),
}


def raw_context(inf: EncodedContextInfo, batch: int, gen: torch.Generator) -> torch.Tensor:
    if inf.kind == "label":
        return torch.randint(0, inf.classes, (batch,), generator=gen)
    return torch.randn(batch, *inf.shape, generator=gen, dtype=torch.float64)


def randomize(module: torch.nn.Module, seed: int = 0, scale: float = 0.25) -> torch.nn.Module:
    """Every parameter replaced by N(0, scale²/fan-in-ish) noise: zero-initialised last layers
    would make every coupling the identity and hide context bugs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan = p[0].numel() if p.dim() > 1 else 1
            std = scale / max(1.0, fan**0.5) * 2.0 if p.dim() > 1 else scale
            p.copy_(std * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
    return module


def context_value(inf: EncodedContextInfo, batch: int, seed: int = 0) -> tuple[ContextValue, ContextEncoder]:
    """A random context of ``batch`` examples and its embedding by a randomised float64 encoder."""
    gen = torch.Generator().manual_seed(seed)
    enc = randomize(ContextEncoder(inf).double(), seed + 1, scale=0.8)
    raw = raw_context(inf, batch, gen)
    with torch.no_grad():
        return ContextValue(raw, enc(raw)), enc


def slice_context(cv: ContextValue, i: int) -> ContextValue:
    return ContextValue(cv.raw[i : i + 1], cv.embedding[i : i + 1])
