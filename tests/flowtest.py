"""Shared helpers for the tests: float64 invariants of a compiled flow."""

from __future__ import annotations

import math

import torch

import flowdsl
from flowdsl.runtime.training.demo import randomize_parameters

__all__ = ["compiled", "jacobian", "check_invertible", "randomize_parameters"]


def compiled(text: str, seed: int = 0, batch: int = 4):
    """Compile spec text in float64, run the data-dependent init, randomise the parameters."""
    model = flowdsl.compile(flowdsl.parse(text), seed=seed).double()
    x = (
        torch.rand(batch, *model.input_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2
        - 0.5
    )
    model.train()
    with torch.no_grad():
        model(x)
    randomize_parameters(model, seed=seed)
    model.eval()
    return model, x


def jacobian(fn, x_flat: torch.Tensor) -> torch.Tensor:
    try:
        return torch.autograd.functional.jacobian(fn, x_flat, vectorize=True)
    except Exception:  # some ops have no batching rule
        return torch.autograd.functional.jacobian(fn, x_flat)


def check_invertible(model, x: torch.Tensor, tol: float = 1e-10, samples: int = 2) -> dict:
    """Round trip and log-det vs slogdet of the autograd Jacobian, both relative ≤ tol."""
    shape = tuple(model.input_shape)
    n = math.prod(shape)
    with torch.no_grad():
        z, logdet = model(x)
        x_back = model.inverse(z)
    assert z.shape == x.shape and logdet.shape == (x.shape[0],)
    rt = float((x_back - x).abs().max() / x.abs().max().clamp_min(1.0))
    assert rt <= tol, f"round trip error {rt:.3e}"
    worst = 0.0
    for i in range(min(samples, x.shape[0])):
        jac = jacobian(lambda v: model(v.reshape(1, *shape))[0].reshape(-1), x[i].reshape(-1))
        ref = torch.linalg.slogdet(jac.reshape(n, n))[1]
        err = float((logdet[i] - ref).abs() / ref.abs().clamp_min(1.0))
        worst = max(worst, err)
    assert worst <= tol, f"log-det error {worst:.3e}"
    return {"roundtrip": rt, "logdet": worst}
