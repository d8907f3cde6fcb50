"""Shared pieces of the inference modules: the CPU fast path, prepacked convolutions, log-det dtype.

* :func:`conv_path` — how a convolution runs: oneDNN's fused convolution + activation op
  (``torch.ops.mkldnn._convolution_pointwise``) with weights reordered once into oneDNN's
  blocked layout in eager CPU inference (float32, and bfloat16/float16 where this CPU has oneDNN's
  16-bit path, see :func:`onednn_supports`; batch > 1); the same op with plain weights
  under ``torch.compile`` on the CPU; ``F.conv2d`` + activation (1×1: a matmul) during ONNX
  export or TorchScript tracing, on other devices, in float64 (oneDNN has no float64
  convolution), in a 16-bit dtype this CPU's oneDNN cannot run, and when autograd needs the graph.
  All paths compute the same values.
* :func:`onednn_supports` — whether this CPU's oneDNN convolves a dtype (the one capability probe).
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

__all__ = [
    "conv_path",
    "onednn_supports",
    "acc_dtype",
    "const_logdet",
    "PackedWeights",
    "InferenceModule",
    "conv_act",
    "pointwise_conv",
    "ACTIVATIONS",
]

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


#: the answers of :func:`onednn_supports` so far (the probe runs once per dtype)
_SUPPORTED: dict[torch.dtype, bool] = {torch.float32: True}


@torch.compiler.assume_constant_result  # under torch.compile: called once while tracing, not traced
def onednn_supports(dtype: torch.dtype) -> bool:
    """Whether oneDNN convolves ``dtype`` on this CPU: float32 always; bfloat16 and float16 only where
    oneDNN has their 16-bit path (bfloat16: avx512bw+avx512vl+avx512dq or avx_ne_convert; float16:
    avx512_fp16 or avx_ne_convert on x86), else its ops raise ``RuntimeError: ... bf16 path needs the
    cpu support ...``. Any other dtype: False. Tests monkeypatch this function to force either answer.
    """
    known = _SUPPORTED.get(dtype)
    if known is None:
        known = _SUPPORTED[dtype] = dtype in _LOW and _probe_16bit(dtype)
    return known


def _probe_16bit(dtype: torch.dtype) -> bool:
    """oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported`` / ``_fp16_``, the one its
    raising ops and inductor use); if that op is missing or fails, the x86 rule of
    :func:`onednn_supports` read from the documented ``torch.cpu.get_capabilities()``; if that fails
    too, False (``F.conv2d`` is always correct)."""
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    try:
        return bool(getattr(torch.ops.mkldnn, f"_is_mkldnn_{name}_supported")())
    except Exception:  # the private op is gone or failed: read the CPU flags instead
        pass
    try:
        caps = torch.cpu.get_capabilities()
    except Exception:
        return False
    if caps.get("avx_ne_convert", False):
        return True
    if dtype == torch.bfloat16:
        return all(caps.get(f, False) for f in ("avx512_bw", "avx512_vl", "avx512_dq"))
    return bool(caps.get("avx512_fp16", False))


def _onednn_ok(x: Tensor, weight: Tensor | None = None) -> bool:
    needs_grad = x.requires_grad or (weight is not None and weight.requires_grad)  # the oneDNN op has no backward
    return (
        _HAS_POINTWISE
        and x.device.type == "cpu"
        and x.dim() == 4
        and not (torch.is_grad_enabled() and needs_grad)
        and onednn_supports(x.dtype)
    )


def conv_path(x: Tensor, weight: Tensor | None = None) -> str:
    """How a convolution on ``x`` runs: ``"packed"`` (eager CPU inference on more than one
    image: oneDNN, weights reordered once), ``"onednn"`` (under ``torch.compile`` on the CPU: the same oneDNN op with
    plain weights, which inductor lowers to one call with the activation fused, and whose shape
    rule does not guard on the batch size) or ``"plain"`` (``F.conv2d``; ONNX export, TorchScript
    tracing, float64, a 16-bit dtype without oneDNN support on this CPU (:func:`onednn_supports`),
    other devices, eager batch 1, or when autograd needs the graph through ``x`` or ``weight``)."""
    if torch.compiler.is_compiling():
        if torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export():
            return "plain"
        return "onednn" if _onednn_ok(x, weight) else "plain"
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return "plain"
    # a single image: oneDNN's fixed cost per call (~30 µs) outweighs its speed, F.conv2d is faster
    # (glow_digits log_prob 2.0 -> 1.6 ms at batch 1; from batch 2 on oneDNN is faster)
    return "packed" if x.shape[0] > 1 and _onednn_ok(x, weight) else "plain"


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


def conv_act(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    padding: int,
    act: str,
    packed: PackedWeights | None,
    key: Any,
    path: str | None = None,
) -> Tensor:
    """act(conv2d(x, weight, bias, padding)); one fused oneDNN call unless on the plain path.
    ``path``: ``conv_path(x, weight)`` when the caller already knows it (a chain of convolutions
    on one input decides once)."""
    if path is None:
        path = conv_path(x, weight)
    if path == "onednn" and (x.shape[1] == 1 or x.shape[2] * x.shape[3] == 1):
        # 1 channel or 1 pixel: NCHW and channels-last strides coincide, the op then returns NCHW
        # while its shape rule (used by inductor) promises channels-last. One zero channel more
        # (and a zero weight column) removes the ambiguity; a 1×1 image takes the plain path.
        if x.shape[2] * x.shape[3] == 1:
            path = "plain"
        else:
            x = torch.cat([x, torch.zeros_like(x)], dim=1).contiguous(memory_format=torch.channels_last)
            weight = torch.cat([weight, torch.zeros_like(weight)], dim=1)
    if path != "plain":
        pad = [padding, padding]
        w = packed.get(key, weight, pad, x) if path == "packed" and packed is not None else weight
        return torch.ops.mkldnn._convolution_pointwise(x, w, bias, pad, [1, 1], [1, 1], 1, act, [], "")
    if weight.shape[-1] == 1 and weight.shape[-2] == 1 and padding == 0:
        y = pointwise_conv(x, weight, bias)
    else:
        y = F.conv2d(x, weight, bias, padding=padding)
    fn = ACTIVATIONS[act]
    return y if fn is None else fn(y)


def pointwise_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A 1×1 convolution as one matmul over the channels.

    ``F.conv2d`` picks its CPU backend for 1×1 kernels from the batch size, so under
    ``torch.compile(dynamic=True)`` it guards on the batch (a recompile at batch 16); a matmul
    has no such heuristic. The batch stays a ``-1`` in every reshape (ONNX dynamic batch).
    """
    c_out, c_in = weight.shape[0], weight.shape[1]
    spatial = x.shape[2:]
    n = 1
    for d in spatial:
        n *= d
    y = torch.matmul(weight.reshape(c_out, c_in), x.reshape(-1, c_in, n))
    if bias is not None:
        y = y + bias.reshape(1, c_out, 1)
    return y.reshape(-1, c_out, *spatial)


class InferenceModule(Bijector):
    """Base of the emitted inference modules (buffers in ``_logdet_buffers`` stay ≥ float32)."""

    _logdet_buffers: tuple[str, ...] = ("logdet",)

    def __init__(self) -> None:
        super().__init__()
        self.packed = PackedWeights()

    def _apply(self, fn, recurse: bool = True):
        keep = {
            name: getattr(self, name) for name in self._logdet_buffers if isinstance(getattr(self, name, None), Tensor)
        }
        out = super()._apply(fn, recurse)
        for name, old in keep.items():
            new = getattr(self, name)
            if new.dtype in _LOW:
                self._buffers[name] = old.to(device=new.device, dtype=torch.float32)
        self.packed.clear()
        return out
