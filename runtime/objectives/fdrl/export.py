"""ONNX export of the FDRL density-ratio estimator (``flowdsl fdrl-export RUN --out DIR``).

``estimator.onnx`` maps a batch on the FDRL model scale, input ``x`` (B, *input_shape), to one
output per example: ``log_r`` (loss ``lr``) or ``r`` (loss ``lsif``); opset 18, dynamic batch
dimension, the EMA weights by default. The metadata carries the spec text and hash, the head,
the loss/divergence and sampler settings, and how data maps to the model scale (images:
v = 2k/(L−1) − 1 for level k; vectors: v = (x − center)/radius with the stored values).

The **sampler is not exported**: each of its steps needs ∇ₓ f′(r(x)), and
``torch.autograd.grad`` inside a module has no ONNX export. It is a PyTorch-only
loop (:func:`flowdsl.runtime.objectives.fdrl.sampler.run_flow`); a deployment that has only the ONNX file
can score examples with r(x) but not generate.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flowdsl.errors import FlowDSLError
from flowdsl.outputs import atomic_write, check_output_path

__all__ = ["export_estimator", "check_estimator_parity"]


class _Head(nn.Module):
    def __init__(self, estimator: nn.Module) -> None:
        super().__init__()
        self.estimator = estimator

    def forward(self, x: Tensor) -> Tensor:
        return self.estimator(x)


def _metadata(model: Any, use_ema: bool) -> dict[str, str]:
    from flowdsl import __version__

    spec = model.spec
    a = model.args
    scale = model.scale
    if scale.image:
        how = f"images: v = 2k/(L-1) - 1 for level k, L = {scale.levels}"
    else:
        how = (
            "vectors: v = (x - center) / radius; center = "
            + json.dumps([round(float(v), 8) for v in scale.center])
            + ", radius = "
            + json.dumps([round(float(v), 8) for v in scale.radius])
        )
    return {
        "flowdsl.version": __version__,
        "flowdsl.kind": "fdrl-estimator",
        "flowdsl.spec_name": spec.name,
        "flowdsl.spec_sha256": spec.sha256,
        "flowdsl.spec": spec.source,
        "flowdsl.input_shape": ",".join(str(d) for d in spec.input.shape),
        "flowdsl.fdrl.output": model.estimator.head,
        "flowdsl.fdrl.loss": a.loss,
        "flowdsl.fdrl.divergence": a.divergence,
        "flowdsl.fdrl.weights": "ema" if use_ema else "raw",
        "flowdsl.fdrl.input_scale": how,
        "flowdsl.fdrl.sampler": (
            f"PyTorch only (needs grad_x): x <- x - {a.step_size:g} * grad_x f'(r(x)) + {a.noise:g} * N(0, I), "
            f"{a.steps} + {model.kappa} steps from source {model.source_kind}"
        ),
    }


def export_estimator(model: Any, out_dir: str | os.PathLike, use_ema: bool = True, example_batch: int = 4) -> str:
    """Write ``estimator.onnx`` for an FDRL model (:class:`~flowdsl.runtime.objectives.fdrl.model.FDRLModel`)."""
    import onnx

    from flowdsl.runtime.export.onnx import OPSET

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FlowDSLError(f"cannot create the output directory {str(out)!r}: {e.strerror}") from None
    est = model.ema if use_ema else model.estimator
    head = _Head(est).to(device="cpu", dtype=torch.float32).eval()
    x = torch.rand((example_batch, *model.input_shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
    path = out / "estimator.onnx"
    check_output_path(path, what="ONNX file")  # a folder, device or FIFO there is refused, not replaced
    raw = out / f".estimator.onnx.{os.getpid()}.partial"
    name = est.head
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                head,
                (x,),
                str(raw),
                dynamo=False,
                opset_version=OPSET,
                input_names=["x"],
                output_names=[name],
                dynamic_axes={"x": {0: "batch"}, name: {0: "batch"}},
                do_constant_folding=True,
            )
        m = onnx.load(str(raw))
    except Exception as e:
        raise FlowDSLError(
            f"cannot export the estimator of {model.spec.name!r} to ONNX: {e}", filename=model.spec.filename
        ) from e
    finally:
        raw.unlink(missing_ok=True)
    del m.metadata_props[:]
    for k, v in _metadata(model, use_ema).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m, full_check=True)
    atomic_write(path, lambda f: f.write(m.SerializeToString()), what="ONNX file")
    return str(path)


@torch.no_grad()
def check_estimator_parity(
    model: Any, path: str, batch: int = 7, seed: int = 1, use_ema: bool = True, x: Tensor | None = None
) -> dict[str, float]:
    """Max absolute and relative error of onnxruntime against PyTorch (float32) at ``batch``."""
    import onnxruntime as ort

    est = (model.ema if use_ema else model.estimator).to(dtype=torch.float32).eval()
    if x is None:
        x = torch.rand((batch, *model.input_shape), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    want = est(x).numpy()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"x": x.numpy()})
    d = float(np.max(np.abs(got - want)))
    return {"abs": d, "rel": d / max(float(np.max(np.abs(want))), 1e-12), "batch": float(x.shape[0])}
