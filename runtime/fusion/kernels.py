"""Shared pieces of the inference modules: the CPU fast path, prepacked convolutions, log-det dtype.

* :func:`fast_path` — whether a call may use oneDNN's fused convolution + activation op
  (``torch.ops.mkldnn._convolution_pointwise``) with weights reordered once into oneDNN's
  blocked layout. Only in eager CPU inference in float32/bfloat16: never while ``torch.compile``
  traces (inductor does its own fusion), during ONNX export or TorchScript tracing, on other
  devices, in float64 (oneDNN has no float64 convolution) or when autograd needs the graph.
  The plain path (``F.conv2d`` + activation) computes the same values.
* :class:`PackedWeights` — the reordered weights, a cache rebuilt when a weight changes (its
  version counter, storage or dtype), dropped on copy, pickling and ``.to()``.
* :class:`InferenceModule` — base of the emitted modules: buffers listed in ``_logdet_buffers``
  stay in float32 when the module is cast to float16/bfloat16, so log-dets accumulate in float32
  (:func:`acc_dtype`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from flowdsl.runtime.bijector import Bijector

__all__ = ["fast_path", "acc_dtype", "const_logdet", "PackedWeights", "InferenceModule", "conv_act", "ACTIVATIONS"]

_LOW = (torch.float16, torch.bfloat16)
_HAS_POINTWISE = hasattr(torch.ops.mkldnn, "_convolution_pointwise") and torch.backends.mkldnn.is_available()

#: activation name -> eager function (the names oneDNN's pointwise op understands)
ACTIVATIONS = {"none": None, "relu": F.relu, "tanh": torch.tanh}


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype log-dets accumulate in: float32 for 16-bit floats, else ``dtype``."""
    return torch.float32 if dtype in _LOW else dtype


def const_logdet(value: Tensor, x: Tensor) -> Tensor:
    """A constant log-det (scalar buffer) as shape (B,) in the accumulation dtype of ``x``."""
    return value.to(acc_dtype(x.dtype)).reshape(1).expand(x.shape[0])


def fast_path(x: Tensor) -> bool:
    """True when the oneDNN fused/prepacked path may run for input ``x`` (see module docstring)."""
    if torch.compiler.is_compiling():
        return False
    if not _HAS_POINTWISE or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16) or x.dim() != 4:
        return False
    return not (torch.is_grad_enabled() and x.requires_grad)


class PackedWeights:
    """Weights reordered for oneDNN, rebuilt when the source tensor changes. Not a buffer."""

    def __init__(self) -> None:
        self._cache: dict[Any, tuple[tuple, Tensor]] = {}

    def get(self, key: Any, weight: Tensor, padding: list[int], x: Tensor) -> Tensor:
        stamp = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        packed = torch.ops.mkldnn._reorder_convolution_weight(
            weight.detach(), padding, [1, 1], [1, 1], 1, list(x.shape)
        )
        self._cache[key] = (stamp, packed)
        return packed

    def clear(self) -> None:
        self._cache.clear()

    def __deepcopy__(self, memo) -> "PackedWeights":
        return PackedWeights()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state) -> None:
        self._cache = {}


def conv_act(x: Tensor, weight: Tensor, bias: Tensor, padding: int, act: str, packed: PackedWeights | None, key: Any) -> Tensor:
    """act(conv2d(x, weight, bias, padding)); one fused oneDNN call on the fast path."""
    if packed is not None and fast_path(x):
        pad = [padding, padding]
        w = packed.get(key, weight, pad, x)
        return torch.ops.mkldnn._convolution_pointwise(x, w, bias, pad, [1, 1], [1, 1], 1, act, [], "")
    y = F.conv2d(x, weight, bias, padding=padding)
    fn = ACTIVATIONS[act]
    return y if fn is None else fn(y)


class InferenceModule(Bijector):
    """Base of the emitted inference modules (buffers in ``_logdet_buffers`` stay ≥ float32)."""

    _logdet_buffers: tuple[str, ...] = ("logdet",)

    def __init__(self) -> None:
        super().__init__()
        self.packed = PackedWeights()

    def _apply(self, fn, recurse: bool = True):
        keep = {name: getattr(self, name) for name in self._logdet_buffers if isinstance(getattr(self, name, None), Tensor)}
        out = super()._apply(fn, recurse)
        for name, old in keep.items():
            new = getattr(self, name)
            if new.dtype in _LOW:
                self._buffers[name] = old.to(device=new.device, dtype=torch.float32)
        self.packed.clear()
        return out
