"""Deployment: ONNX export of the forward and inverse graphs, checked against onnxruntime."""
