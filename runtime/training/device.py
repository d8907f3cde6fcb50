"""Where a command runs: ``--device auto|cpu|cuda[:N]`` and ``--precision 32|bf16-mixed``.

``auto`` is CUDA when torch sees a GPU, else the CPU. Under torchrun (``LOCAL_RANK`` set) ``auto``
and ``cuda`` mean ``cuda:$LOCAL_RANK``, so each process drives its own GPU. A CUDA device that is
not there is a user error (:class:`flowdsl.errors.FlowDSLError`), never a torch traceback.
CUDA itself is untested on the project's machines (they have no GPU); the CPU paths are.
"""

from __future__ import annotations

import argparse
import os
import re

import torch

from flowdsl.errors import FlowDSLError
from flowdsl.wording import plural

__all__ = ["DEVICE_CHOICES_HELP", "PRECISIONS", "add_device_argument", "add_precision_argument", "resolve_device"]

DEVICE_CHOICES_HELP = "auto (CUDA when present), cpu, cuda or cuda:N (default auto)"
PRECISIONS = ("32", "bf16-mixed")
_DEVICE = re.compile(r"^(auto|cpu|cuda(?::(\d+))?)$")


def _device_text(text: str) -> str:
    value = str(text).strip().lower()
    if not _DEVICE.match(value):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return value


def resolve_device(
    text: str = "auto", *, cuda_available: bool | None = None, device_count: int | None = None
) -> torch.device:
    """The torch device for ``text`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    ``cuda_available``/``device_count`` default to torch's answers (tests pass their own).
    """
    value = _device_text(text)
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    local_rank = os.environ.get("LOCAL_RANK")
    if value == "cpu" or (value == "auto" and not available):
        return torch.device("cpu")
    if not available:
        raise FlowDSLError(
            f"--device {text}: CUDA is not available here (use --device cpu or auto)", filename="flowdsl"
        )
    count = torch.cuda.device_count() if device_count is None else device_count
    m = _DEVICE.match(value)
    index = int(m.group(2)) if m and m.group(2) is not None else int(local_rank or 0)
    if index >= count:
        raise FlowDSLError(
            f"--device {text}: cuda:{index} does not exist ({plural(count, 'CUDA device')} visible)", filename="flowdsl"
        )
    return torch.device("cuda", index)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--device`` (a validated string; resolve it with :func:`resolve_device`)."""
    parser.add_argument("--device", type=_device_text, default="auto", metavar="DEVICE", help=DEVICE_CHOICES_HELP)


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--precision 32|bf16-mixed`` (training only; None when not given, so that a resumed
    run keeps the precision it started with)."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="32 (default): float32 throughout; bf16-mixed: the conditioner networks run under bfloat16 "
        "autocast, weights, log-determinants and the prior stay float32 (a resumed run keeps its precision)",
    )
