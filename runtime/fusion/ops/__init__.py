"""Inference modules that the fusion rules emit: channel maps, conv programs and their kernels."""
