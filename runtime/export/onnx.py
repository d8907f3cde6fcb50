"""ONNX export of a compiled flow: ``forward.onnx`` (x → z, logdet, log_prob) and ``inverse.onnx`` (z → x).

The model is first fused (``model.fuse()``), so weight-only quantities (inverse matrices,
constant log-dets) are computed at export time in float64 and stored as initializers; no linalg
solver reaches the graph. Both files have a dynamic batch dimension, pass ``onnx.checker`` and
carry the spec text, its sha256 and the flowdsl version in their metadata. The exporter is
torch's dynamo exporter at opset 18 (below 18 dynamo writes invalid models). With ``check=True`` the same fused
module is run against the files in onnxruntime (:func:`check_parity`); a relative error above the
tolerance, or a NaN, fails the export.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "export_onnx",
    "check_parity",
    "parity_failures",
    "parity_table",
    "ExportResult",
    "OPSET",
    "ForwardGraph",
    "InverseGraph",
]

OPSET = 18
#: the outputs :func:`check_parity` compares (``{name}_abs`` and ``{name}_rel`` in its result)
PARITY_OUTPUTS = ("z", "logdet", "log_prob", "inverse")


class ExportResult(tuple):
    """``(forward_path, inverse_path)``, so it unpacks as two paths; ``parity`` holds the errors of
    :func:`check_parity` on the exported module when the export was checked, else None."""

    parity: dict[str, float] | None

    def __new__(cls, forward: str, inverse: str, parity: dict[str, float] | None = None) -> "ExportResult":
        self = super().__new__(cls, (forward, inverse))
        self.parity = parity
        return self

    def __getnewargs__(self) -> tuple:
        return (self[0], self[1], self.parity)

    @property
    def forward(self) -> str:
        return self[0]

    @property
    def inverse(self) -> str:
        return self[1]


class ForwardGraph(nn.Module):
    """x -> (z, logdet, log_prob)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z, logdet = self.model(x)
        return z, logdet, self.model.prior.log_prob(z) + logdet


class InverseGraph(nn.Module):
    """z -> x."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor) -> Tensor:
        return self.model.inverse(z)


def _export_dynamo(module: nn.Module, example: Tensor, path: Path, in_name: str, out_names: list[str]) -> None:
    from torch.export import Dim

    batch = Dim("batch", min=1, max=1 << 20)
    prog = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        opset_version=OPSET,
        input_names=[in_name],
        output_names=out_names,
        dynamic_shapes=({0: batch},),
        optimize=True,
        verbose=False,
    )
    prog.save(str(path))


def _export_torchscript(module: nn.Module, example: Tensor, path: Path, in_name: str, out_names: list[str]) -> None:
    axes = {name: {0: "batch"} for name in [in_name, *out_names]}
    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=[in_name],
        output_names=out_names,
        dynamic_axes=axes,
        do_constant_folding=True,
    )


def _export(module: nn.Module, example: Tensor, path: Path, in_name: str, out_names: list[str], exporter: str) -> str:
    """Export with the chosen exporter; ``auto`` tries TorchScript (fast) then dynamo. Returns the one used."""
    order = {"auto": ["torchscript", "dynamo"], "torchscript": ["torchscript"], "dynamo": ["dynamo"]}[exporter]
    last: Exception | None = None
    for name in order:
        fn = _export_torchscript if name == "torchscript" else _export_dynamo
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_onnx_logs():
                warnings.simplefilter("ignore")
                fn(module, example, path, in_name, out_names)
            return name
        except Exception as e:  # try the next exporter
            last = e
    raise RuntimeError(f"ONNX export failed: {last}") from last


@contextlib.contextmanager
def _quiet_onnx_logs():
    import logging

    names = ["torch.onnx", "torch.onnx._internal.exporter._registration", "torch.export", "torch._dynamo", "onnxscript"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _finalize(raw: Path, path: Path, spec: Any, direction: str) -> None:
    """Add metadata to the exported ``raw`` file, check it, and only then move it to ``path``."""
    import onnx

    from flowdsl.version import __version__

    m = onnx.load(str(raw))
    meta = {
        "flowdsl.version": __version__,
        "flowdsl.direction": direction,
        "flowdsl.spec_name": spec.name,
        "flowdsl.spec_sha256": spec.sha256,
        "flowdsl.spec": spec.source,
        "flowdsl.input_shape": ",".join(str(d) for d in spec.input.shape),
    }
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m, full_check=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(m, str(tmp))
    os.replace(tmp, path)
    raw.unlink(missing_ok=True)


def export_onnx(
    model: nn.Module,
    out_dir: str | os.PathLike,
    example_batch: int = 4,
    exporter: str = "auto",
    check: bool = False,
    check_batch: int = 7,
    tolerance: float = 1e-4,
) -> ExportResult:
    """Write ``forward.onnx`` and ``inverse.onnx`` into ``out_dir``; returns their paths (an
    :class:`ExportResult`, with the parity errors when checked).

    The export runs in float32 on the CPU on a fused copy of ``model``, fused once, and an unfused
    ``model`` is unchanged; an already fused ``model`` is used itself (moved to float32 on the CPU).
    ``exporter``: ``"torchscript"`` (fast), ``"dynamo"`` (torch.export based), or ``"auto"``
    (TorchScript, falling back to dynamo for graphs it cannot express). Opset 18 either way.
    ``check``: run the written files in onnxruntime against that fused module on ``check_batch``
    inputs; raises :class:`FlowDSLError` (the files stay written) when a relative error is above
    ``tolerance`` or NaN.
    """
    from flowdsl.errors import FlowDSLError

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FlowDSLError(f"cannot create the output directory {str(out)!r}: {e.strerror}") from None
    fused = model.fuse() if not getattr(model, "is_fused", False) else model
    fused = fused.to(device="cpu", dtype=torch.float32).eval()
    shape = tuple(fused.input_shape)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((example_batch, *shape), generator=gen)
    with torch.no_grad():
        z, _ = fused(x)
    fwd_path, inv_path = out / "forward.onnx", out / "inverse.onnx"
    raw_fwd, raw_inv = out / "forward.onnx.partial", out / "inverse.onnx.partial"
    try:
        _export(ForwardGraph(fused), x, raw_fwd, "x", ["z", "logdet", "log_prob"], exporter)
        _export(InverseGraph(fused), z, raw_inv, "z", ["x"], exporter)
        _finalize(raw_fwd, fwd_path, model.spec, "forward")
        _finalize(raw_inv, inv_path, model.spec, "inverse")
    except OSError as e:
        raise FlowDSLError(f"cannot write ONNX files to {str(out)!r}: {e.strerror or e}") from None
    except Exception as e:
        raise FlowDSLError(f"cannot export {model.spec.name!r} to ONNX: {e}", filename=model.spec.filename) from e
    finally:
        raw_fwd.unlink(missing_ok=True)
        raw_inv.unlink(missing_ok=True)
    if not check:
        return ExportResult(str(fwd_path), str(inv_path))
    parity = check_parity(fused, str(fwd_path), str(inv_path), batch=check_batch)
    bad = parity_failures(parity, tolerance)
    if bad:
        worst = ", ".join(f"{k} {v:.3e}" for k, v in bad.items())
        raise FlowDSLError(
            f"onnxruntime disagrees with PyTorch on {model.spec.name!r} (relative error above {tolerance:g} or NaN: "
            f"{worst}); the files were written to {str(out)!r}",
            filename=model.spec.filename,
            notes=[f"float32, batch {check_batch}:", *parity_table(parity)],
        )
    return ExportResult(str(fwd_path), str(inv_path), parity)


def parity_failures(parity: dict[str, float], tolerance: float) -> dict[str, float]:
    """The relative errors of a :func:`check_parity` result that are not ≤ ``tolerance``; a NaN
    error is one of them (``max`` and ``>`` would let it pass)."""
    return {name: parity[f"{name}_rel"] for name in PARITY_OUTPUTS if not parity[f"{name}_rel"] <= tolerance}


def parity_table(parity: dict[str, float]) -> list[str]:
    """The lines of the abs/rel error table of a :func:`check_parity` result, one per output."""
    lines = [f"{'output':<10} {'max abs err':>12} {'max rel err':>12}"]
    for name in PARITY_OUTPUTS:
        lines.append(f"{name:<10} {parity[f'{name}_abs']:12.3e} {parity[f'{name}_rel']:12.3e}")
    return lines


def check_parity(
    model: nn.Module, forward_path: str, inverse_path: str, batch: int = 7, seed: int = 1
) -> dict[str, float]:
    """Max abs and relative errors of onnxruntime against PyTorch (float32) at ``batch``."""
    import onnxruntime as ort

    m = model.to(device="cpu", dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, *m.input_shape), generator=gen)
    with torch.no_grad():
        z, logdet = m(x)
        lp = m.prior.log_prob(z) + logdet
        x_back = m.inverse(z)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    fs = ort.InferenceSession(forward_path, opts, providers=["CPUExecutionProvider"])
    is_ = ort.InferenceSession(inverse_path, opts, providers=["CPUExecutionProvider"])
    oz, old, olp = fs.run(None, {"x": x.numpy()})
    (ox,) = is_.run(None, {"z": z.numpy()})

    def err(a: np.ndarray, b: Tensor) -> tuple[float, float]:
        b = b.numpy()
        d = float(np.max(np.abs(a - b))) if a.size else 0.0
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        return d, d / max(scale, 1e-12)

    res = {}
    for name, a, b in (("z", oz, z), ("logdet", old, logdet), ("log_prob", olp, lp), ("inverse", ox, x)):
        res[f"{name}_abs"], res[f"{name}_rel"] = err(a, b)
    res["roundtrip_abs"] = float((x_back - x).abs().max())
    return res
