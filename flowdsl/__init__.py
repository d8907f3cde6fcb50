"""flowdsl: a declarative graph compiler for normalizing-flow architectures.

spec = flowdsl.parse(text)            # or flowdsl.load("specs/glow_digits.flow")
model = flowdsl.compile(spec)         # torch.nn.Module: z, logdet = model(x)
flowdsl.export_onnx(model, "out/")    # forward.onnx and inverse.onnx
"""

from flowdsl.api import check_graph, compile, export_onnx, load, parse
from flowdsl.errors import CheckError, FlowDSLError, ParseError
from flowdsl.version import __version__

__all__ = [
    "parse",
    "load",
    "compile",
    "export_onnx",
    "check_graph",
    "FlowDSLError",
    "ParseError",
    "CheckError",
    "__version__",
]
