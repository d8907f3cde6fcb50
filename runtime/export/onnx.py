"""ONNX export of a compiled flow, written as one unit (:mod:`flowdsl.runtime.export.pair`):

    forward.onnx   x [, context]  ->  z, logdet, log_prob
    inverse.onnx   z [, context]  ->  x, log_prob      (one inverse pass: ``model.inverse_with_log_prob``)
    prior.onnx     noise [, context], temperature  ->  z   (the trained prior's sampler,
                   :mod:`flowdsl.runtime.export.prior`; ``context`` only for a conditional prior)

The modules exported are in :mod:`flowdsl.runtime.export.graphs`. ``context`` is an input only
for a conditional model: labels int64 (B,), vectors float32 (B, D), images float32 (B, C, H, W),
with the same dynamic batch dimension as ``x``/``z``/the noise.

The model is first fused (``model.fuse()``), so weight-only quantities (inverse matrices,
constant log-dets) are computed at export time in float64 and stored as initializers; no linalg
solver reaches the graph. Every file has a dynamic batch dimension, passes ``onnx.checker`` and
carries the spec text, its sha256 and the flowdsl version in its metadata. The exporter is
torch's TorchScript exporter, or its dynamo exporter where TorchScript cannot express a graph,
at opset 18 (below 18 dynamo writes invalid models). With ``check=True`` the same fused module is
run against the files in onnxruntime (:func:`flowdsl.runtime.export.parity.check_parity`); a
relative error above the tolerance, or a NaN, fails the export.
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

from flowdsl.runtime.export.graphs import (
    ForwardGraph,
    InverseGraph,
    context_signature,
    example_context,
    prior_uses_context,
)
from flowdsl.runtime.export.parity import PARITY_OUTPUTS, check_parity, parity_failures, parity_table

__all__ = [
    "export_onnx",
    "check_parity",
    "parity_failures",
    "parity_table",
    "ExportResult",
    "OPSET",
    "PARITY_OUTPUTS",
    "ForwardGraph",
    "InverseGraph",
    "FORWARD_OUTPUTS",
    "INVERSE_OUTPUTS",
    "sample_onnx",
    "describe_io",
    "fed_contexts",
]

OPSET = 18
#: the output names of forward.onnx and inverse.onnx
FORWARD_OUTPUTS = ("z", "logdet", "log_prob")
INVERSE_OUTPUTS = ("x", "log_prob")


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
    c = example_context(fused, example_batch, gen)
    with torch.no_grad():
        z = fused(x)[0] if c is None else fused(x, context=c)[0]
    ins, inv_ins = (["x"], ["z"]) if c is None else (["x", "context"], ["z", "context"])
    fwd_ex, inv_ex = (x, z) if c is None else ((x, c), (z, c))
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
    if c is not None:
        extra["flowdsl.context"] = context_signature(fused)
        if sampler:
            who = "prior.onnx and inverse.onnx take" if prior_uses_context(fused) else "inverse.onnx takes"
            extra["flowdsl.sampling"] += f"; {who} the context too (input 'context')"
        if fused.context_kind == "label":
            extra["flowdsl.context_classes"] = str(int(fused.context_classes))
    if weights is not None:
        extra["flowdsl.weights"] = weights
    stage = None
    try:
        pair.recover(target)
        stage = pair.stage_folder(target, eid)
        files = ["forward.onnx", "inverse.onnx"] + (["prior.onnx"] if sampler else [])
        raw = {f: stage / (f + ".partial") for f in files}
        _export(ForwardGraph(fused), fwd_ex, raw["forward.onnx"], ins, list(FORWARD_OUTPUTS), exporter)
        _export(InverseGraph(fused), inv_ex, raw["inverse.onnx"], inv_ins, list(INVERSE_OUTPUTS), exporter)
        if sampler:
            with torch.no_grad():
                export_prior(
                    fused.prior, shape, raw["prior.onnx"], _export, exporter, example_batch, model=fused, context=c
                )
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
            notes=[f"float32, batch {check_batch}{fed_contexts(parity)}:", *parity_table(parity)],
        )
    return ExportResult(str(fwd_path), str(inv_path), parity)


def fed_contexts(parity: dict) -> str:
    """``", label contexts"`` when the parity check fed contexts (conditional models), else ``""``."""
    return f", {parity['context']} contexts" if parity.get("context") else ""


def describe_io(path: str | os.PathLike) -> str:
    """An ONNX file's signature as text, e.g. ``"z (B,1,8,8), context (B,) int64 -> x, log_prob"``
    (read from the file: what the export command prints)."""
    import onnx

    g = onnx.load(os.fspath(path), load_external_data=False).graph

    def one(v) -> str:
        t = v.type.tensor_type
        dims = ",".join(d.dim_param and "B" or str(d.dim_value) for d in t.shape.dim)
        dims += "," if len(t.shape.dim) == 1 else ""
        dtype = "" if t.elem_type == onnx.TensorProto.FLOAT else f" {onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)}"
        return f"{v.name} ({dims}){dtype}"

    return ", ".join(one(v) for v in g.input) + " -> " + ", ".join(v.name for v in g.output)


def sample_onnx(
    folder: str | os.PathLike,
    n: int,
    temperature: float = 1.0,
    seed: int = 0,
    with_log_prob: bool = False,
    context: Any = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``n`` samples of an exported model drawn with onnxruntime and numpy only (the recipe of
    :mod:`flowdsl.runtime.export.prior`): noise from ``numpy.random.default_rng(seed)`` through
    ``prior.onnx`` then ``inverse.onnx``, which also gives their log_prob (``with_log_prob``).

    ``context`` (a conditional export only, then required): labels (n,) or one label, vectors
    (n, D) or (D,), images (n, C, H, W) or (C, H, W); one example is repeated n times.
    The folder is verified first (:func:`flowdsl.runtime.export.pair.verify_export`)."""
    from flowdsl.errors import FlowDSLError
    from flowdsl.runtime.export.pair import verify_export
    from flowdsl.runtime.export.parity import ort_session

    f = Path(folder)
    manifest = verify_export(f)
    if "prior.onnx" not in manifest["files"]:
        raise FlowDSLError("this export has no prior.onnx (its prior samples in PyTorch only)", filename=str(f))
    sess = {k: ort_session(str(f / f"{k}.onnx")) for k in ("prior", "inverse")}
    meta = sess["prior"].get_modelmeta().custom_metadata_map
    shape = tuple(int(d) for d in meta["flowdsl.input_shape"].split(","))
    ctx = _context_feed(sess["inverse"], meta.get("flowdsl.context"), context, n, str(f))
    rng = np.random.default_rng(seed)
    feeds = {"temperature": np.array([temperature], np.float32)}
    for i in sess["prior"].get_inputs():
        if i.name == "normal":
            feeds["normal"] = rng.standard_normal((n, *shape), dtype=np.float32)
        elif i.name == "uniform":
            feeds["uniform"] = rng.random((n, *shape), dtype=np.float32)
        elif i.name == "context":
            feeds["context"] = ctx
    (z,) = sess["prior"].run(["z"], feeds)
    x, lp = sess["inverse"].run(["x", "log_prob"], {"z": z, **({} if ctx is None else {"context": ctx})})
    return (x, lp) if with_log_prob else x


def _context_feed(inverse: Any, declared: str | None, context: Any, n: int, where: str) -> np.ndarray | None:
    """The ``context`` array to feed (n leading), or None for an unconditional export."""
    from flowdsl.errors import ContextError

    inp = next((i for i in inverse.get_inputs() if i.name == "context"), None)
    if inp is None:
        if context is not None:
            raise ContextError("this export is unconditional: it takes no context", filename=where)
        return None
    if context is None:
        raise ContextError(f"this export is conditional: pass a context ({declared})", filename=where)
    label = inp.type == "tensor(int64)"
    arr = np.asarray(context)
    if label and not np.issubdtype(arr.dtype, np.integer):
        raise ContextError(f"the context is a label: pass integers, not {arr.dtype} ({declared})", filename=where)
    arr = arr.astype(np.int64 if label else np.float32)
    rank = len(inp.shape)  # (B, ...)
    if arr.ndim == rank - 1:
        arr = np.broadcast_to(arr, (n, *arr.shape)).copy()
    classes = inverse.get_modelmeta().custom_metadata_map.get("flowdsl.context_classes")
    if label and classes is not None and arr.size and not (0 <= arr.min() and arr.max() < int(classes)):
        raise ContextError(f"a label is outside 0..{int(classes) - 1} ({declared})", filename=where)
    want = [n, *inp.shape[1:]]
    if arr.ndim != rank or any(isinstance(d, int) and d != a for d, a in zip(want, arr.shape)):
        raise ContextError(
            f"the context has shape {tuple(arr.shape)}, expected {tuple(want)} ({declared})", filename=where
        )
    return arr
