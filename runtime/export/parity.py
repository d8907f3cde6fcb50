"""onnxruntime against PyTorch on an exported pair: the error table of ``flowdsl export``.

:func:`check_parity` feeds a random batch (and, for a conditional model, a random context batch
of its kind: labels, vectors or images, :func:`flowdsl.runtime.export.graphs.example_context`)
to ``forward.onnx`` and the resulting z to ``inverse.onnx``, and compares every output with the
same float32 module in PyTorch:

    z, logdet, log_prob     forward.onnx against the module's forward pass
    inverse                 inverse.onnx's x against the module's inverse of the same z
    inverse_log_prob        inverse.onnx's log_prob against the module's one-pass inverse log_prob

Each as a max abs error and a relative one (abs / max |reference|); NaN is a failure.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from flowdsl.runtime.export.graphs import example_context, forward_with_log_prob, inverse_with_log_prob

__all__ = ["PARITY_OUTPUTS", "check_parity", "parity_failures", "parity_table", "ort_session"]

#: the outputs :func:`check_parity` compares (``{name}_abs`` and ``{name}_rel`` in its result)
PARITY_OUTPUTS = ("z", "logdet", "log_prob", "inverse", "inverse_log_prob")


def parity_failures(parity: dict[str, float], tolerance: float) -> dict[str, float]:
    """The relative errors of a :func:`check_parity` result that are not ≤ ``tolerance``; a NaN
    error is one of them (``max`` and ``>`` would let it pass)."""
    return {name: parity[f"{name}_rel"] for name in PARITY_OUTPUTS if not parity[f"{name}_rel"] <= tolerance}


def parity_table(parity: dict[str, float]) -> list[str]:
    """The lines of the abs/rel error table of a :func:`check_parity` result, one per output."""
    w = max(len(n) for n in PARITY_OUTPUTS)
    lines = [f"{'output':<{w}} {'max abs err':>12} {'max rel err':>12}"]
    for name in PARITY_OUTPUTS:
        lines.append(f"{name:<{w}} {parity[f'{name}_abs']:12.3e} {parity[f'{name}_rel']:12.3e}")
    return lines


def ort_session(path: str):
    """A quiet CPU onnxruntime session."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _err(a: np.ndarray, b: Tensor) -> tuple[float, float]:
    b = b.numpy()
    d = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return d, d / max(scale, 1e-12)


def check_parity(
    model: nn.Module, forward_path: str, inverse_path: str, batch: int = 7, seed: int = 1
) -> dict[str, float]:
    """Max abs and relative errors of onnxruntime against PyTorch (float32) at ``batch``, for
    each name in :data:`PARITY_OUTPUTS`; also ``roundtrip_abs`` (PyTorch's own round-trip error
    |inverse(forward(x)) − x|, float32: a property of the flow, not of the export), ``onnx_roundtrip_abs``
    (the same through the two files) and, for a conditional model, the ``context`` kind it was fed.

    Raises :class:`FlowDSLError` when the two files carry different export ids (a mixed pair)."""
    from flowdsl.runtime.export.pair import check_same_export

    check_same_export(forward_path, inverse_path)

    m = model.to(device="cpu", dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, *m.input_shape), generator=gen)
    c = example_context(m, batch, gen)
    with torch.no_grad():
        z, logdet, lp = forward_with_log_prob(m, x, c)
        x_back, lp_back = inverse_with_log_prob(m, z, c)
    extra = {} if c is None else {"context": c.numpy()}
    oz, old, olp = ort_session(forward_path).run(["z", "logdet", "log_prob"], {"x": x.numpy(), **extra})
    ox, oilp = ort_session(inverse_path).run(["x", "log_prob"], {"z": z.numpy(), **extra})
    res: dict = {}
    for name, a, b in (
        ("z", oz, z),
        ("logdet", old, logdet),
        ("log_prob", olp, lp),
        ("inverse", ox, x_back),
        ("inverse_log_prob", oilp, lp_back),
    ):
        res[f"{name}_abs"], res[f"{name}_rel"] = _err(a, b)
    res["roundtrip_abs"] = float((x_back - x).abs().max())
    res["onnx_roundtrip_abs"] = float(np.max(np.abs(ox - x.numpy()))) if ox.size else 0.0
    if c is not None:
        res["context"] = getattr(m, "context_kind", None)
    return res
