"""``ConvProgram``: a coupling conditioner built from convolutions, as a flat inference program.

The conv conditioners of ``runtime/layers/_nets.py`` — Glow's ``ConvNet`` (3×3 → ReLU → 1×1 →
ReLU → 3×3) and ``ResNet`` (3×3, residual blocks ReLU → 3×3 → ReLU → 1×1 with a skip, ReLU,
3×3) — are read once into a list of instructions over one register ``h`` and a stack:

    ("conv", i, padding, act)   h = act(conv(h, w_i, b_i))        act ∈ {"none", "relu"}
    ("relu",)                   h = relu(h)
    ("save",)                   push h
    ("add",)                    h = pop() + h

A ReLU right after a convolution becomes that convolution's ``act``: on the CPU the pair is one
oneDNN call (``kernels.conv_act``), with prepacked weights in eager mode, and the hidden
activations stay in channels-last layout. The output is returned contiguous (NCHW), because the
coupling slices it along channels next. Any other module in the net is refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from flowdsl.compiler.passes.fusion import Refused
from flowdsl.runtime.fusion.ops.kernels import PackedWeights, conv_act, conv_path

__all__ = ["ConvProgram"]


class ConvProgram(nn.Module):
    """The program of a conv conditioner (buffers ``w{i}``, ``b{i}``; see the module docstring)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.packed = PackedWeights()
        self.program: list[tuple[Any, ...]] = []
        convs: list[nn.Conv2d] = []
        self._walk(net, convs)
        for i, c in enumerate(convs):
            w = c.weight.detach().clone()
            b = (
                c.bias.detach().clone()
                if c.bias is not None
                else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
            )
            self.register_buffer(f"w{i}", w)
            self.register_buffer(f"b{i}", b)

    def _walk(self, module: nn.Module, convs: list[nn.Conv2d]) -> None:
        body = getattr(module, "body", None)
        if isinstance(body, nn.Sequential) and not isinstance(module, nn.Sequential):  # a residual block
            self.program.append(("save",))
            self._walk(body, convs)
            self.program.append(("add",))
            return
        if not isinstance(module, nn.Sequential):
            raise Refused(f"conditioner with a {type(module).__name__}")
        for m in module:
            if isinstance(m, nn.Conv2d):
                if (
                    m.stride != (1, 1)
                    or m.dilation != (1, 1)
                    or m.groups != 1
                    or m.padding[0] != m.padding[1]
                    or m.padding_mode != "zeros"
                ):
                    raise Refused("conditioner convolution with stride, dilation, groups or non-zero padding")
                self.program.append(("conv", len(convs), int(m.padding[0]), "none"))
                convs.append(m)
            elif isinstance(m, nn.ReLU):
                last = self.program[-1] if self.program else None
                if last is not None and last[0] == "conv" and last[3] == "none":
                    self.program[-1] = (*last[:3], "relu")
                else:
                    self.program.append(("relu",))
            else:
                self._walk(m, convs)

    def forward(self, x: Tensor) -> Tensor:
        path = conv_path(x)  # the weights are buffers: the same path for every convolution here
        onednn = path != "plain"
        h = x.contiguous(memory_format=torch.channels_last) if onednn else x
        stack: list[Tensor] = []
        for op in self.program:
            if op[0] == "conv":
                _, i, pad, act = op
                h = conv_act(h, getattr(self, f"w{i}"), getattr(self, f"b{i}"), pad, act, self.packed, i, path)
            elif op[0] == "relu":
                h = torch.relu(h)
            elif op[0] == "save":
                stack.append(h)
            else:
                h = stack.pop() + h
        return h.contiguous() if onednn else h

    def _apply(self, fn, recurse: bool = True):
        self.packed.clear()
        return super()._apply(fn, recurse)
