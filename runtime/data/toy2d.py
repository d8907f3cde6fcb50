"""2-D toy densities for vector flows: two moons, 8 Gaussians, checkerboard, pinwheel.

The definitions follow the toy sets of FFJORD (Grathwohl et al. 2019,
https://arxiv.org/abs/1810.01367, ``lib/toy_data.py``); samples come from
``numpy.random.Generator(PCG64(seed))``, so a (name, n, seed) triple always gives the same points.
The **train** split of a run with seed ``s`` is drawn with seed ``s``; the **test** split with
seed ``s + 1_000_003`` (independent draws of the same density). Sizes: 50,000 train and
5,000 test points by default. All sets are roughly centred with a spread of about ±4.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from flowdsl.errors import DataError
from flowdsl.runtime.data.base import Dataset, as_dataset
from flowdsl.runtime.data.registry import DataRequest, register_dataset

__all__ = [
    "TOY_SAMPLERS",
    "TOY_ALIASES",
    "sample_toy",
    "two_moons",
    "eight_gaussians",
    "checkerboard",
    "pinwheel",
    "load_toy",
]

TEST_SEED_OFFSET = 1_000_003
DEFAULT_N = {"train": 50_000, "test": 5_000}


def two_moons(n: int, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    """Two interleaved half circles (scikit-learn's ``make_moons``), scaled ×2 and centred."""
    n_out = n // 2
    n_in = n - n_out
    t_out = rng.uniform(0, np.pi, n_out)
    t_in = rng.uniform(0, np.pi, n_in)
    outer = np.stack([np.cos(t_out), np.sin(t_out)], 1)
    inner = np.stack([1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5], 1)
    x = np.concatenate([outer, inner])[rng.permutation(n)]
    x = x + noise * rng.standard_normal(x.shape)
    return x * 2 + np.array([-1.0, -0.2])


def eight_gaussians(n: int, rng: np.random.Generator, scale: float = 4.0, std: float = 0.5) -> np.ndarray:
    """Eight Gaussians of std 0.5 on a circle of radius 4, then divided by 1.414."""
    angles = np.arange(8) * (np.pi / 4)
    centers = scale * np.stack([np.cos(angles), np.sin(angles)], 1)
    idx = rng.integers(0, 8, n)
    return (centers[idx] + std * rng.standard_normal((n, 2))) / 1.414


def checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform on the dark squares of a 4×4 checkerboard over [−4, 4]²."""
    x1 = rng.uniform(-2, 2, n)
    x2_ = rng.uniform(0, 1, n) - rng.integers(0, 2, n) * 2
    x2 = x2_ + (np.floor(x1) % 2)
    return np.stack([x1, x2], 1) * 2


def pinwheel(
    n: int,
    rng: np.random.Generator,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    arms: int = 5,
    rate: float = 0.25,
) -> np.ndarray:
    """Five spiral arms (pinwheel), scaled ×2."""
    rads = np.linspace(0, 2 * np.pi, arms, endpoint=False)
    feats = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    feats[:, 0] += 1.0
    labels = rng.integers(0, arms, n)
    angles = rads[labels] + rate * np.exp(feats[:, 0])
    rot = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], 1).reshape(-1, 2, 2)
    return 2 * np.einsum("ti,tij->tj", feats, rot)


TOY_SAMPLERS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "moons": two_moons,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
}
TOY_ALIASES = {"two_moons": "moons", "twomoons": "moons", "eight_gaussians": "8gaussians", "gaussians8": "8gaussians"}


def sample_toy(name: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points (n, 2) float64 of the toy density ``name``, drawn with ``seed``."""
    key = TOY_ALIASES.get(name, name)
    if key not in TOY_SAMPLERS:
        raise DataError(f"unknown toy density {name!r} (known: {', '.join(TOY_SAMPLERS)})", filename=name)
    rng = np.random.Generator(np.random.PCG64(seed))
    return TOY_SAMPLERS[key](int(n), rng)


def load_toy(name: str, input_shape, levels, split: str = "train", seed: int = 0, n: int | None = None) -> Dataset:
    n = DEFAULT_N[split] if n is None else int(n)
    s = seed if split == "train" else seed + TEST_SEED_OFFSET
    x = sample_toy(name, n, s)
    return as_dataset(
        name,
        x,
        input_shape=input_shape,
        levels=levels,
        data_levels=None,
        split=split,
        notes=[f"{n} points of the 2-D toy density {TOY_ALIASES.get(name, name)!r} (seed {s})"],
    )


def _aliases(key: str) -> tuple[str, ...]:
    return tuple(a for a, k in TOY_ALIASES.items() if k == key)


def _toy(req: DataRequest) -> Dataset:
    return load_toy(req.name, req.shape, req.levels, req.split, seed=req.seed, n=req.n)


@register_dataset(
    "moons", kind="vector", aliases=_aliases("moons"), description="2-D toy density: two interleaved half circles"
)
def _moons(req: DataRequest) -> Dataset:
    return _toy(req)


@register_dataset(
    "8gaussians",
    kind="vector",
    aliases=_aliases("8gaussians"),
    description="2-D toy density: eight Gaussians on a circle",
)
def _eight_gaussians(req: DataRequest) -> Dataset:
    return _toy(req)


@register_dataset(
    "checkerboard", kind="vector", description="2-D toy density: uniform on the dark squares of a 4×4 board"
)
def _checkerboard(req: DataRequest) -> Dataset:
    return _toy(req)


@register_dataset("pinwheel", kind="vector", description="2-D toy density: five spiral arms")
def _pinwheel(req: DataRequest) -> Dataset:
    return _toy(req)
