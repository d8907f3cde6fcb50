"""flowdsl.runtime: bijector and prior modules, the compiled model, ONNX export, training."""
