"""``--precision bf16-mixed``: bfloat16 autocast for the conditioner networks, float32 everywhere else.

What runs in bfloat16: the forward pass of every conditioner network (the ``conv``, ``resnet`` and
``mlp`` nets of couplings, also inside RG layers: :mod:`flowdsl.runtime.layers._nets`), under
``torch.autocast(device_type, dtype=torch.bfloat16)``; these hold nearly all of a flow's FLOPs. Their
outputs are cast back to the dtype of their input (float32) on the way out, so the bijector
arithmetic (``(x + shift)·s``), every log-determinant (Σ log s, slogdet, ActNorm's H·W·Σ log|a|),
their sum over the chain and the prior's log-density stay float32. The weights stay float32
("master weights"; autocast casts per call), so AdamW updates float32 parameters and checkpoints
hold float32 tensors; gradients flow back through the casts in float32 except inside the nets.

Why not autocast around the whole ``log_prob``: on the CPU autocast does not promote sums and
logarithms to float32 (on CUDA it does), and a :class:`~flowdsl.runtime.bijector.Bijector` returns
its log-det in the dtype of its input, so a bfloat16 activation after a 1×1 convolution would make
the next coupling's and ActNorm's log-dets bfloat16 (about 3 significant digits). Scoping autocast to
the conditioners gives the same speed-up where the FLOPs are and float32 densities on every device.

Evaluation, sampling and export are not affected (the context is entered per training step only).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import Tensor, nn

__all__ = ["PRECISIONS", "conditioner_nets", "autocast_conditioners", "check_precision"]

PRECISIONS = ("32", "bf16-mixed")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS` (else a :class:`flowdsl.errors.DataError`)."""
    if precision not in PRECISIONS:
        from flowdsl.errors import DataError

        raise DataError(f"precision must be 32 or bf16-mixed, got {precision!r}", filename="train")
    return precision


def conditioner_nets(model: nn.Module) -> list[nn.Module]:
    """The conditioner networks of ``model`` (outermost only; each is a ``_nets`` net)."""
    from flowdsl.runtime.layers._nets import MLP, ConvNet, ResNet

    kinds = (ConvNet, ResNet, MLP)
    found: list[nn.Module] = []
    inside: set[int] = set()
    for m in model.modules():
        if id(m) in inside:
            continue
        if isinstance(m, kinds):
            found.append(m)
            inside.update(id(s) for s in m.modules())
    return found


def _cast_back(out: Any, dtype: torch.dtype) -> Any:
    if isinstance(out, Tensor) and out.is_floating_point():
        return out.to(dtype)
    if isinstance(out, tuple):
        return tuple(_cast_back(o, dtype) for o in out)
    return out


def _autocast_forward(net: nn.Module, device_type: str) -> Any:
    forward = type(net).forward.__get__(net)

    def run(x: Tensor, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out = forward(x, *args, **kwargs)
        return _cast_back(out, x.dtype)

    return run


@contextlib.contextmanager
def autocast_conditioners(
    model: nn.Module, device: torch.device | str, precision: str = "bf16-mixed"
) -> Iterator[None]:
    """Within the block, ``model``'s conditioner nets run under bfloat16 autocast on ``device``'s
    type and return their input's dtype (``precision`` "32": nothing changes). The nets' own
    ``forward`` is restored on exit, also after an exception."""
    if check_precision(precision) == "32":
        yield
        return
    device_type = torch.device(device).type
    nets = conditioner_nets(model)
    for net in nets:
        net.forward = _autocast_forward(net, device_type)  # an instance attribute: no state_dict change
    try:
        yield
    finally:
        for net in nets:
            net.__dict__.pop("forward", None)
