"""Dequantisation of discrete data and the bits-per-dimension bookkeeping.

For data with ``levels`` quantisation levels (raw values k ∈ {0, …, levels−1}) the model sees
x on the [0, 1) scale:

    uniform   x = (k + u) / levels,  u ~ U[0, 1)^D      (``dequantize uniform``, the default)
    none      x = (k + ½) / levels                      (bin centres; no noise)

Real vectors (``levels`` None) are passed through unchanged.

Bits per dimension of the *discrete* data, from the continuous log-density log p(x) in nats of
x on the [0, 1) scale (the change of variables k → x = (k+u)/levels contributes D·log(levels)):

    bits/dim = (−log p(x) + D·log(levels)) / (D · ln 2)

Uniform dequantisation makes this an upper bound on the discrete model's bits/dim (Theis et
al. 2016). For real vectors it is −log p(x) / (D · ln 2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["dequantize", "quantize", "bits_per_dim", "nats_to_bits_per_dim", "uniform_bits_per_dim"]


def dequantize(
    k: Tensor, levels: int | None, mode: str = "uniform", generator: torch.Generator | None = None
) -> Tensor:
    """Raw values ``k`` → x on the [0, 1) scale (see the module docstring)."""
    if levels is None:
        return k
    if mode == "uniform":
        u = torch.rand(k.shape, generator=generator, dtype=k.dtype, device=k.device)
        return (k + u) / levels
    if mode == "none":
        return (k + 0.5) / levels
    raise ValueError(f"unknown dequantisation {mode!r}")


def quantize(x: Tensor, levels: int | None) -> Tensor:
    """x on the [0, 1) scale → raw values floor(x·levels) clipped to 0…levels−1 (as float)."""
    if levels is None:
        return x
    return torch.floor(x * levels).clamp(0, levels - 1)


def nats_to_bits_per_dim(nll_nats_per_dim: Tensor | float, levels: int | None) -> Tensor | float:
    """Per-dimension negative log-likelihood in nats (of x on [0, 1)) → bits/dim of the data."""
    shift = math.log(levels) if levels is not None else 0.0
    return (nll_nats_per_dim + shift) / math.log(2.0)


def bits_per_dim(log_prob: Tensor, dims: int, levels: int | None) -> Tensor:
    """Per-example bits/dim from per-example log p(x) in nats, x on the [0, 1) scale."""
    shift = dims * math.log(levels) if levels is not None else 0.0
    return (-log_prob + shift) / (dims * math.log(2.0))


def uniform_bits_per_dim(levels: int) -> float:
    """The bits/dim of the uniform distribution over ``levels`` values: log2(levels)."""
    return math.log2(levels)
