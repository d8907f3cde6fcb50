"""ONNX export of a compiled flow: ``forward.onnx`` (x → z, logdet, log_prob), ``inverse.onnx`` (z → x)
and ``prior.onnx`` (standard noise, temperature → z: the trained prior's sampler, see
:mod:`flowdsl.runtime.export.prior`), written as one unit (:mod:`flowdsl.runtime.export.pair`).

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
    "sample_onnx",
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


def _inputs(example: Tensor | tuple[Tensor, ...], in_name: str | list[str]) -> tuple[tuple[Tensor, ...], list[str]]:
    examples = example if isinstance(example, tuple) else (example,)
    names = [in_name] if isinstance(in_name, str) else list(in_name)
    return examples, names


def _export_dynamo(module: nn.Module, example, path: Path, in_name, out_names: list[str], fixed=()) -> None:
    """``fixed``: input names without a batch dimension (e.g. the prior's ``temperature``)."""
    from torch.export import Dim

    examples, names = _inputs(example, in_name)
    batch = Dim("batch", min=1, max=1 << 20)
    prog = torch.onnx.export(
        module,
        examples,
        dynamo=True,
        opset_version=OPSET,
        input_names=names,
        output_names=out_names,
        dynamic_shapes=tuple(None if n in fixed else {0: batch} for n in names),
        optimize=True,
        verbose=False,
    )
    prog.save(str(path))


def _export_torchscript(module: nn.Module, example, path: Path, in_name, out_names: list[str], fixed=()) -> None:
    examples, names = _inputs(example, in_name)
    axes = {name: {0: "batch"} for name in [*names, *out_names] if name not in fixed}
    torch.onnx.export(
        module,
        examples,
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=names,
        output_names=out_names,
        dynamic_axes=axes,
        do_constant_folding=True,
    )


def _export(module: nn.Module, example, path: Path, in_name, out_names: list[str], exporter: str, fixed=()) -> str:
    """Export with the chosen exporter; ``auto`` tries TorchScript (fast) then dynamo. Returns the one used."""
    order = {"auto": ["torchscript", "dynamo"], "torchscript": ["torchscript"], "dynamo": ["dynamo"]}[exporter]
    last: Exception | None = None
    for name in order:
        fn = _export_torchscript if name == "torchscript" else _export_dynamo
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_onnx_logs():
                warnings.simplefilter("ignore")
                fn(module, example, path, in_name, out_names, fixed)
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


def _finalize(raw: Path, path: Path, spec: Any, direction: str, extra: dict[str, str]) -> None:
    """Add metadata (spec, export id, ``extra``) to the exported ``raw`` file, check it, save as ``path``."""
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
        **extra,
    }
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    raw.unlink(missing_ok=True)


def export_onnx(
    model: nn.Module,
    out_dir: str | os.PathLike,
    example_batch: int = 4,
    exporter: str = "auto",
    check: bool = False,
    check_batch: int = 7,
    tolerance: float = 1e-4,
    weights: str | None = None,
) -> ExportResult:
    """Write ``forward.onnx``, ``inverse.onnx`` and (when the prior has ``from_noise``)
    ``prior.onnx`` into the folder ``out_dir``, as one unit; returns the forward and inverse
    paths (an :class:`ExportResult`, with the parity errors when checked).

    The files are written into a staging folder beside ``out_dir``, all with one
    ``flowdsl.export_id`` in their metadata and an ``export.json`` manifest, and the folder then
    takes ``out_dir``'s place atomically (:mod:`flowdsl.runtime.export.pair`): a reader or a killed
    export never leaves files of two exports side by side. ``out_dir`` must be new or hold only
    a previous export. ``weights`` (e.g. ``"runs/x/best.pt, step 400"`` or ``"untrained"``) is
    recorded as ``flowdsl.weights``.

    The export runs in float32 on the CPU on a fused copy of ``model``, fused once, and an unfused
    ``model`` is unchanged; an already fused ``model`` is used itself (moved to float32 on the CPU).
    ``exporter``: ``"torchscript"`` (fast), ``"dynamo"`` (torch.export based), or ``"auto"``
    (TorchScript, falling back to dynamo for graphs it cannot express). Opset 18 either way.
    ``check``: run the written files in onnxruntime against that fused module on ``check_batch``
    inputs; raises :class:`FlowDSLError` (the files stay written) when a relative error is above
    ``tolerance`` or NaN.
    """
    import shutil

    from flowdsl.errors import FlowDSLError
    from flowdsl.runtime.export import pair
    from flowdsl.runtime.export.prior import SAMPLING_RECIPE, can_export_prior, export_prior, prior_noise

    target = pair.prepare_target(out_dir)
    out = Path(out_dir)
    fused = model.fuse() if not getattr(model, "is_fused", False) else model
    fused = fused.to(device="cpu", dtype=torch.float32).eval()
    shape = tuple(fused.input_shape)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((example_batch, *shape), generator=gen)
    with torch.no_grad():
        z, _ = fused(x)
    spec = model.spec
    eid = pair.new_export_id()
    sampler = can_export_prior(fused.prior)
    extra = {
        "flowdsl.export_id": eid,
        "flowdsl.prior": getattr(getattr(spec, "prior", None), "name", type(fused.prior).__name__),
        "flowdsl.sampling": SAMPLING_RECIPE if sampler else "PyTorch only: the prior has no from_noise",
    }
    if sampler:
        extra["flowdsl.prior_noise"] = ",".join(prior_noise(fused.prior))
    if weights is not None:
        extra["flowdsl.weights"] = weights
    stage = None
    try:
        pair.recover(target)
        stage = pair.stage_folder(target, eid)
        files = ["forward.onnx", "inverse.onnx"] + (["prior.onnx"] if sampler else [])
        raw = {f: stage / (f + ".partial") for f in files}
        _export(ForwardGraph(fused), x, raw["forward.onnx"], "x", ["z", "logdet", "log_prob"], exporter)
        _export(InverseGraph(fused), z, raw["inverse.onnx"], "z", ["x"], exporter)
        if sampler:
            with torch.no_grad():
                export_prior(fused.prior, shape, raw["prior.onnx"], _export, exporter)
        for f in files:
            _finalize(raw[f], stage / f, spec, f.split(".")[0], extra)
        pair.write_manifest(stage, eid, files, {"spec_sha256": spec.sha256, "weights": weights})
        pair.commit(stage, target)
        stage = None
    except FlowDSLError:
        raise
    except OSError as e:
        raise FlowDSLError(f"cannot write ONNX files to {str(out)!r}: {e.strerror or e}") from None
    except Exception as e:
        raise FlowDSLError(f"cannot export {spec.name!r} to ONNX: {e}", filename=spec.filename) from e
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    fwd_path, inv_path = out / "forward.onnx", out / "inverse.onnx"
    if not check:
        return ExportResult(str(fwd_path), str(inv_path))
    parity = check_parity(fused, str(fwd_path), str(inv_path), batch=check_batch)
    bad = parity_failures(parity, tolerance)
    if bad:
        worst = ", ".join(f"{k} {v:.3e}" for k, v in bad.items())
        raise FlowDSLError(
            f"onnxruntime disagrees with PyTorch on {spec.name!r} (relative error above {tolerance:g} or NaN: "
            f"{worst}); the files were written to {str(out)!r}",
            filename=spec.filename,
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
    """Max abs and relative errors of onnxruntime against PyTorch (float32) at ``batch``.

    Raises :class:`FlowDSLError` when the two files carry different export ids (a mixed pair)."""
    import onnxruntime as ort

    from flowdsl.runtime.export.pair import check_same_export

    check_same_export(forward_path, inverse_path)

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


def sample_onnx(
    folder: str | os.PathLike, n: int, temperature: float = 1.0, seed: int = 0, with_log_prob: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``n`` samples of an exported model drawn with onnxruntime and numpy only (the recipe of
    :mod:`flowdsl.runtime.export.prior`): noise from ``numpy.random.default_rng(seed)`` through
    ``prior.onnx`` then ``inverse.onnx``; ``with_log_prob`` also scores them with ``forward.onnx``.
    The folder is verified first (:func:`flowdsl.runtime.export.pair.verify_export`)."""
    import onnxruntime as ort

    from flowdsl.runtime.export.pair import verify_export

    f = Path(folder)
    manifest = verify_export(f)
    if "prior.onnx" not in manifest["files"]:
        from flowdsl.errors import FlowDSLError

        raise FlowDSLError("this export has no prior.onnx (its prior samples in PyTorch only)", filename=str(f))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = {
        k: ort.InferenceSession(str(f / f"{k}.onnx"), opts, providers=["CPUExecutionProvider"])
        for k in ("prior", "inverse", "forward")
    }
    meta = sess["prior"].get_modelmeta().custom_metadata_map
    shape = tuple(int(d) for d in meta["flowdsl.input_shape"].split(","))
    rng = np.random.default_rng(seed)
    feeds = {"temperature": np.array([temperature], np.float32)}
    for i in sess["prior"].get_inputs():
        if i.name == "normal":
            feeds["normal"] = rng.standard_normal((n, *shape), dtype=np.float32)
        elif i.name == "uniform":
            feeds["uniform"] = rng.random((n, *shape), dtype=np.float32)
    (z,) = sess["prior"].run(None, feeds)
    (x,) = sess["inverse"].run(None, {"z": z})
    if not with_log_prob:
        return x
    _, _, lp = sess["forward"].run(None, {"x": x})
    return x, lp
