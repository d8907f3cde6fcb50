"""The public API: parse / load a spec, compile it to a PyTorch module, export it to ONNX.

    spec = flowdsl.parse(text, filename="<string>")     # or flowdsl.load(path)
    model = flowdsl.compile(spec)                      # torch.nn.Module (FlowModel)
    z, logdet = model(x, context=c)                    # c only for a flow that declares a context
    x, log_prob = model.sample(n, context=c, return_log_prob=True)
    forward_path, inverse_path = flowdsl.export_onnx(model, out_dir)

``parse`` runs every static pass (expansion, graph, shape inference, checks), so a spec it
returns is known to compile; every rejection is a located :class:`flowdsl.FlowDSLError`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from flowdsl.errors import ParseError
from flowdsl.schema import FlowSpec

if TYPE_CHECKING:
    from flowdsl.runtime.export.onnx import ExportResult

__all__ = ["parse", "load", "compile", "export_onnx", "check_graph"]


def parse(text: str | bytes, filename: str = "<string>") -> FlowSpec:
    """Parse and check spec text; returns the validated :class:`FlowSpec`.

    Raises:
        ParseError: the text does not follow the grammar.
        CheckError: the text parses but is rejected (names, values, shapes, ...).
    """
    from flowdsl.compiler.passes import run_pipeline

    spec, _graph = run_pipeline(text, filename)
    return spec


def load(path: str | os.PathLike) -> FlowSpec:
    """Read and parse a spec file (see :func:`parse`)."""
    from flowdsl.parser import read_source

    if not isinstance(path, (str, os.PathLike)):
        raise ParseError(f"flowdsl.load expects a path, not {type(path).__name__}")
    return parse(read_source(path), filename=os.fspath(path))


def check_graph(spec: FlowSpec | str) -> Any:
    """The checked bijector graph (``FlowGraph``) of a spec or spec text."""
    if isinstance(spec, (str, bytes)):
        spec = parse(spec)
    return spec.graph


def compile(spec: FlowSpec | str, seed: int | None = None) -> Any:  # noqa: A001 - the API name
    """Build the trainable PyTorch module of a spec (or of spec text).

    Parameters are initialised from ``seed`` (default: the spec's ``train(seed=...)``), without
    disturbing the global random state. A conditional flow (a ``context`` statement) takes
    ``context=`` in every call (see :mod:`flowdsl.runtime.model`); ``model.context_shape`` is None
    for an unconditional one.
    """
    from flowdsl.runtime.model import FlowModel

    if isinstance(spec, (str, bytes)):
        spec = parse(spec)
    if not isinstance(spec, FlowSpec) or spec.graph is None:
        raise TypeError(f"flowdsl.compile expects a FlowSpec from flowdsl.parse/load, got {type(spec).__name__}")
    return FlowModel.from_graph(spec.graph, seed=seed)


def export_onnx(
    model: Any,
    out_dir: str | os.PathLike,
    check: bool = False,
    exporter: str = "auto",
    *,
    check_batch: int = 7,
    tolerance: float = 1e-4,
    weights: str | None = None,
) -> ExportResult:
    """Write ``forward.onnx`` (x → z, logdet, log_prob), ``inverse.onnx`` (z → x, log_prob, in
    one inverse pass) and ``prior.onnx`` (noise, temperature → z: the prior's sampler) into
    out_dir, as one unit (a folder swap; out_dir must be new or hold only a previous export). A
    conditional model's files also take ``context`` (labels int64 (B,), vectors (B, D), images
    (B, C, H, W)), with the batch dimension of x/z. ``weights`` describes the weights (recorded in
    the metadata).

    ``exporter`` is ``"auto"`` (TorchScript, falling back to dynamo), ``"torchscript"`` or
    ``"dynamo"``; opset 18. With ``check=True`` the files are also run in onnxruntime against the
    same fused module on ``check_batch`` inputs; a relative error above ``tolerance`` or a NaN raises
    :class:`FlowDSLError`. Returns ``(forward_path, inverse_path)`` as an ``ExportResult`` tuple whose
    ``parity`` holds the errors when checked (see ``flowdsl.runtime.export.onnx.check_parity``).
    """
    from flowdsl.runtime.export.onnx import export_onnx as _export

    return _export(
        model, out_dir, exporter=exporter, check=check, check_batch=check_batch, tolerance=tolerance, weights=weights
    )
