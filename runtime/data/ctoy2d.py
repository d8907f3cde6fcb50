"""2-D conditional toy densities with a known conditional density, for vector flows with a context.

``rotated_gaussian`` (also ``rotgauss``): a context c ~ U[−1, 1] (one number per example, the
spec's ``context vector(dim=1)``) and a point x ∈ ℝ² with

    x | c ~ N(m(c), R(θ) diag(s₁², s₂²) R(θ)ᵀ),   θ = π·c/2,   m(c) = (2c, c²),   s₁ = 1, s₂ = 0.25,

R(θ) the rotation by θ: an elongated Gaussian that turns by 90° and moves along a parabola as c
runs over [−1, 1]. Its exact conditional log-density (:func:`conditional_log_density`) is

    log p(x | c) = −½ (u₁²/s₁² + u₂²/s₂²) − log(2π s₁ s₂),   u = R(θ)ᵀ (x − m(c)),

and the conditional entropy is the same for every c: H(x | c) = log(2πe·s₁·s₂) ≈ 1.4516 nats
(:func:`conditional_entropy`). A flow's test NLL minus the mean of −log p(x | c) over the same test
pairs estimates the expected KL divergence E_c KL(p(·|c) ‖ q(·|c)) (the conditional benchmark of
``flowdsl bench-training``).

Splits as for the unconditional toys (:mod:`.toy2d`): the train split is drawn with the run's seed,
the test split with seed + 1,000,003, from ``numpy.random.Generator(PCG64(seed))``; 50,000 train and
5,000 test pairs by default.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from flowdsl.errors import DataError
from flowdsl.runtime.data.base import Dataset, as_dataset
from flowdsl.runtime.data.registry import DataRequest, register_dataset
from flowdsl.runtime.data.toy2d import DEFAULT_N, TEST_SEED_OFFSET

__all__ = [
    "CONDITIONAL_TOYS",
    "rotated_gaussian",
    "rotated_gaussian_log_density",
    "conditional_log_density",
    "conditional_entropy",
    "sample_conditional_toy",
    "load_conditional_toy",
]

S1, S2 = 1.0, 0.25


def _frame(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (n, 2), cos θ (n,), sin θ (n,)) for contexts c (n,)."""
    theta = np.pi * c / 2
    mean = np.stack([2 * c, c**2], 1)
    return mean, np.cos(theta), np.sin(theta)


def rotated_gaussian(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs: points x (n, 2) and contexts c (n, 1) (see the module docstring)."""
    c = rng.uniform(-1.0, 1.0, n)
    e = rng.standard_normal((n, 2)) * np.array([S1, S2])
    mean, co, si = _frame(c)
    x = mean + np.stack([co * e[:, 0] - si * e[:, 1], si * e[:, 0] + co * e[:, 1]], 1)
    return x, c[:, None]


def rotated_gaussian_log_density(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """log p(x | c) (nats) of :func:`rotated_gaussian`: x (n, 2), c (n, 1) or (n,) → (n,) float64."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64).reshape(len(x))
    mean, co, si = _frame(c)
    d = x - mean
    u1 = co * d[:, 0] + si * d[:, 1]
    u2 = -si * d[:, 0] + co * d[:, 1]
    return -0.5 * ((u1 / S1) ** 2 + (u2 / S2) ** 2) - math.log(2 * math.pi * S1 * S2)


#: name -> (sampler, exact log p(x | c), conditional entropy in nats or None, context dimension)
CONDITIONAL_TOYS: dict[str, tuple[Callable, Callable, float | None, int]] = {
    "rotated_gaussian": (
        rotated_gaussian,
        rotated_gaussian_log_density,
        math.log(2 * math.pi * math.e * S1 * S2),
        1,
    ),
}
_ALIASES = {"rotgauss": "rotated_gaussian"}


def _key(name: str) -> str:
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in CONDITIONAL_TOYS:
        raise DataError(
            f"{name!r} is not a conditional toy density (known: {', '.join(CONDITIONAL_TOYS)})", filename=str(name)
        )
    return key


def conditional_log_density(name: str, x, c) -> np.ndarray:
    """The exact log p(x | c) (nats) of the conditional toy ``name``; x (n, 2), c (n, D) → (n,)."""
    key = _key(name)
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    d = CONDITIONAL_TOYS[key][3]
    if x.ndim != 2 or x.shape[1] != 2 or c.reshape(len(c), -1).shape != (len(x), d):
        raise DataError(
            f"conditional_log_density takes points (n, 2) and contexts (n, {d}), got {x.shape} and {c.shape}",
            filename=str(name),
        )
    return CONDITIONAL_TOYS[key][1](x, c)


def conditional_entropy(name: str) -> float | None:
    """H(x | c) in nats when it has a closed form (the same for every c), else None."""
    return CONDITIONAL_TOYS[_key(name)][2]


def sample_conditional_toy(name: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs (x (n, 2), c (n, D)) of the conditional toy ``name``, drawn with ``seed``."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return CONDITIONAL_TOYS[_key(name)][0](int(n), rng)


def load_conditional_toy(
    name: str, input_shape, levels, split: str = "train", seed: int = 0, n: int | None = None
) -> Dataset:
    n = DEFAULT_N[split] if n is None else int(n)
    s = seed if split == "train" else seed + TEST_SEED_OFFSET
    x, c = sample_conditional_toy(name, n, s)
    return as_dataset(
        name,
        x,
        input_shape=input_shape,
        levels=levels,
        data_levels=None,
        split=split,
        notes=[f"{n} (x, c) pairs of the conditional 2-D toy {_key(name)!r} (seed {s})"],
        context=c,
    )


@register_dataset(
    "rotated_gaussian",
    kind="vector",
    aliases=tuple(_ALIASES),
    description="2-D conditional toy: context c ~ U[−1, 1] (vector, dim 1), x given c an elongated Gaussian "
    "rotated by πc/2 (exact conditional log-density)",
)
def _rotated_gaussian(req: DataRequest) -> Dataset:
    return load_conditional_toy(req.name, req.shape, req.levels, req.split, seed=req.seed, n=req.n)
