"""Data sets and dequantisation for training (no network access at run time)."""
