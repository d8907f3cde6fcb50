"""``prior.onnx``: the trained prior's sampler as a graph, so onnxruntime and numpy alone sample.

The graph is the prior's ``from_noise`` (:mod:`flowdsl.runtime.priors.base`) with its parameters
(learned μ, σ or b, the spike's annealed width, ...) as initializers:

    inputs   one per name in ``prior.noise``, each (B, *input_shape) float32:
               normal    standard normal noise N(0, 1)
               uniform   uniform noise U[0, 1)
             context     a conditional prior only (``prior ...(conditional=true)``), after the
                         noise: the context batch as forward.onnx/inverse.onnx take it
             temperature (1,) float32, finite and ≥ 0
    output   z (B, *input_shape), distributed as the prior at that temperature

and ``inverse.onnx`` maps z to samples x and their log_prob. The recipe (numpy + onnxruntime, no torch)::

    rng = np.random.default_rng(seed)
    feeds = {"temperature": np.array([T], np.float32)}
    for i in prior.get_inputs():
        if i.name == "normal":  feeds["normal"] = rng.standard_normal((n, *shape), dtype=np.float32)
        if i.name == "uniform": feeds["uniform"] = rng.random((n, *shape), dtype=np.float32)
    (z,) = prior.run(None, feeds); x, log_prob = inverse.run(None, {"z": z})

A conditional flow's ``inverse.onnx`` (and a conditional prior's ``prior.onnx``) also take
``context``; :func:`flowdsl.runtime.export.onnx.sample_onnx` feeds it.

A prior kind without ``from_noise`` exports no ``prior.onnx`` (its metadata says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "PriorGraph",
    "PriorGraph2",
    "ConditionalPriorGraph",
    "ConditionalPriorGraph2",
    "can_export_prior",
    "export_prior",
    "prior_noise",
    "SAMPLING_RECIPE",
]

SAMPLING_RECIPE = (
    "z = prior.onnx(normal ~ N(0,1), uniform ~ U[0,1) as its inputs ask, each (B, *input_shape), "
    "temperature (1,)); x, log_prob = inverse.onnx(z)"
)


def prior_noise(prior: nn.Module) -> tuple[str, ...]:
    """The noise names the prior's ``from_noise`` takes (empty: it cannot be exported)."""
    return tuple(getattr(prior, "noise", ()) or ())


def can_export_prior(prior: nn.Module) -> bool:
    from flowdsl.runtime.priors.base import Prior

    fn = getattr(type(prior), "from_noise", None)
    return bool(prior_noise(prior)) and fn is not None and fn is not Prior.from_noise


class PriorGraph(nn.Module):
    """(noise, temperature) -> z for a prior with one kind of noise (``prior.noise``)."""

    def __init__(self, prior: nn.Module) -> None:
        super().__init__()
        self.prior = prior
        self.names = prior_noise(prior)

    def forward(self, a: Tensor, temperature: Tensor) -> Tensor:
        return self.prior.from_noise({self.names[0]: a}, temperature)


class PriorGraph2(PriorGraph):
    """(noise_1, noise_2, temperature) -> z for a prior with two kinds of noise, in ``prior.noise``
    order (fixed arity: torch.export takes no ``*args`` with per-input dynamic shapes)."""

    def forward(self, a: Tensor, b: Tensor, temperature: Tensor) -> Tensor:  # type: ignore[override]
        return self.prior.from_noise({self.names[0]: a, self.names[1]: b}, temperature)


class ConditionalPriorGraph(nn.Module):
    """(noise, context, temperature) -> z for a conditional prior with one kind of noise: the
    context is encoded by the model's own encoder (``model.encode_context``), then handed to
    ``prior.from_noise``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names = prior_noise(model.prior)

    def _z(self, noise: dict[str, Tensor], context: Tensor, temperature: Tensor) -> Tensor:
        from flowdsl.runtime.export.graphs import strict_labels

        a = next(iter(noise.values()))
        cv = self.model.encode_context(strict_labels(self.model, context), a.shape[0], a.device, a.dtype)
        return self.model.prior.from_noise(noise, temperature, cv)

    def forward(self, a: Tensor, context: Tensor, temperature: Tensor) -> Tensor:
        return self._z({self.names[0]: a}, context, temperature)


class ConditionalPriorGraph2(ConditionalPriorGraph):
    """(noise_1, noise_2, context, temperature) -> z (two kinds of noise, ``prior.noise`` order)."""

    def forward(self, a: Tensor, b: Tensor, context: Tensor, temperature: Tensor) -> Tensor:  # type: ignore[override]
        return self._z({self.names[0]: a, self.names[1]: b}, context, temperature)


def export_prior(
    prior: nn.Module,
    shape: tuple[int, ...],
    path: Path,
    export: Callable[..., str],
    exporter: str,
    batch: int = 4,
    model: nn.Module | None = None,
    context: Tensor | None = None,
) -> None:
    """Write the raw (metadata-less) ``prior.onnx`` through ``export`` (the exporter of
    :mod:`flowdsl.runtime.export.onnx`). A conditional prior (``prior.uses_context``) needs the
    ``model`` (its context encoder) and an example ``context`` batch of ``batch`` examples; its
    graph then takes ``context`` after the noise."""
    conditional = bool(getattr(prior, "uses_context", False))
    if conditional and (model is None or context is None):
        raise ValueError("a conditional prior is exported with its model and an example context")
    gen = torch.Generator().manual_seed(0)
    examples = []
    for name in prior_noise(prior):
        if name == "normal":
            examples.append(torch.randn((batch, *shape), generator=gen))
        elif name == "uniform":
            examples.append(torch.rand((batch, *shape), generator=gen))
        else:
            raise ValueError(f"unknown noise {name!r} (expected 'normal' or 'uniform')")
    n_noise = len(examples)
    if conditional:
        examples.append(context)
        graph = {1: ConditionalPriorGraph, 2: ConditionalPriorGraph2}[n_noise](model).eval()
    else:
        graph = {1: PriorGraph, 2: PriorGraph2}[n_noise](prior).eval()
    examples.append(torch.tensor([0.7]))
    names = [*prior_noise(prior), *(["context"] if conditional else []), "temperature"]
    export(graph, tuple(examples), path, names, ["z"], exporter, fixed=("temperature",))
