"""2-D toy densities for vector flows: two moons, 8 Gaussians, checkerboard, pinwheel.

The definitions follow the toy sets of FFJORD (Grathwohl et al. 2019,
https://arxiv.org/abs/1810.01367, ``lib/toy_data.py``); samples come from
``numpy.random.Generator(PCG64(seed))``, so a (name, n, seed) triple always gives the same points.
The **train** split of a run with seed ``s`` is drawn with seed ``s``; the **test** split with
seed ``s + 1_000_003`` (independent draws of the same density). Sizes: 50,000 train and
5,000 test points by default. All sets are roughly centred with a spread of about ±4.

Known densities (:func:`log_density`, natural log, points (n, 2) → (n,)):

* ``8gaussians``: the equal-weight mixture of 8 isotropic Gaussians, centres 4·(cos kπ/4, sin kπ/4)/1.414,
  std 0.5/1.414: log p(x) = logsumexp_k(−|x − c_k|²/(2σ²)) − log 8 − log(2πσ²).
* ``checkerboard``: uniform on the 8 dark 2×2 squares of [−4, 4)² (area 32): log p = −log 32 there,
  −inf elsewhere; a square is dark when ⌊x₁/2⌋ + ⌊x₂/2⌋ is even.
* ``pinwheel``: arm k (probability 1/5, angle θ_k = 2πk/5) draws v = (r, t), r ~ N(1, 0.3²),
  t ~ N(0, 0.1²), and emits x = 2·R(−a)v with a = θ_k + 0.25·e^r (R a rotation). By the change of
  variables, p(x) = ¼ Σ_k Σ_{v ∈ preimages} ⅕ N(r) N(t) / |1 + 0.25·e^r·t| (the Jacobian of
  v ↦ R(−a(r))v has determinant 1 + a'(r)·t). |v| = |x|/2 and the angle ψ of v solves
  ψ − θ_k − 0.25·e^{|v|cos ψ} ≡ angle(x) (mod 2π); the roots are bracketed on a grid of 256
  angles and refined by bisection (to 1e-12 rad), so the value is exact but for two roots closer
  than one grid step; more than one root per arm needs a fold, 1 + 0.25·e^r·t < 0, far in the
  tails (r = 1 needs t < −1.47, 15 standard deviations; r = 2 needs t < −0.54).
* ``moons`` has no closed form (a uniform arc convolved with a Gaussian): no ``log_density``.
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
    "log_density",
    "TOY_LOG_DENSITIES",
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


def eight_gaussians_log_density(x: np.ndarray, scale: float = 4.0, std: float = 0.5) -> np.ndarray:
    """log p(x) of :func:`eight_gaussians` (see the module docstring); x (n, 2) → (n,)."""
    x = np.asarray(x, dtype=np.float64)
    angles = np.arange(8) * (np.pi / 4)
    centers = scale * np.stack([np.cos(angles), np.sin(angles)], 1) / 1.414
    s2 = (std / 1.414) ** 2
    q = -((x[:, None, :] - centers[None]) ** 2).sum(-1) / (2 * s2)  # (n, 8)
    m = q.max(1)
    return m + np.log(np.exp(q - m[:, None]).sum(1)) - np.log(8.0) - np.log(2 * np.pi * s2)


def checkerboard_log_density(x: np.ndarray) -> np.ndarray:
    """log p(x) of :func:`checkerboard`: −log 32 on the dark squares of [−4, 4)², −inf elsewhere."""
    x = np.asarray(x, dtype=np.float64)
    inside = np.all((x >= -4) & (x < 4), axis=1)
    dark = (np.floor(x[:, 0] / 2) + np.floor(x[:, 1] / 2)) % 2 == 0
    return np.where(inside & dark, -np.log(32.0), -np.inf)


def pinwheel_log_density(
    x: np.ndarray,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    arms: int = 5,
    rate: float = 0.25,
    grid: int = 256,
    chunk: int = 4096,
) -> np.ndarray:
    """log p(x) of :func:`pinwheel` by the change of variables (see the module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty(len(x))
    for i in range(0, len(x), chunk):
        out[i : i + chunk] = _pinwheel_log_density(x[i : i + chunk], radial_std, tangential_std, arms, rate, grid)
    return out


def _pinwheel_log_density(x, radial_std, tangential_std, arms, rate, grid) -> np.ndarray:
    w = x / 2
    rho = np.hypot(w[:, 0], w[:, 1])[:, None, None]  # (n, 1, 1)
    phi = np.arctan2(w[:, 1], w[:, 0])[:, None, None]
    theta = np.linspace(0, 2 * np.pi, arms, endpoint=False)[None, :, None]  # (1, K, 1)
    two_pi = 2 * np.pi

    psi = np.linspace(0, two_pi, grid + 1)[None, None, :]  # (1, 1, G+1)
    # F(ψ)/2π (increases by 1 over one turn of ψ); the exponential does not depend on the arm
    fv = (psi - rate * np.exp(rho * np.cos(psi)) - theta - phi) / two_pi  # (n, K, G+1)
    m = np.floor(fv)
    # a root of F ≡ 0 (mod 2π) in [ψ_j, ψ_{j+1}) for each integer crossed: ⌊F/2π⌋ changes there
    cross = m[..., 1:] != m[..., :-1]
    n_idx, k_idx, j_idx = np.nonzero(cross)
    lo = psi[0, 0, j_idx].copy()
    hi = psi[0, 0, j_idx + 1].copy()
    target = np.maximum(m[n_idx, k_idx, j_idx], m[n_idx, k_idx, j_idx + 1])  # the integer crossed
    r_, th, ph = rho[n_idx, 0, 0], theta[0, k_idx, 0], phi[n_idx, 0, 0]

    def g(p):
        return (p - rate * np.exp(r_ * np.cos(p)) - th - ph) / two_pi - target

    up = g(lo) < 0  # increasing through the integer
    for _ in range(40):  # bisection: (2π/grid)·2^-40 < 1e-12 rad
        mid = (lo + hi) / 2
        below = g(mid) < 0
        go_right = below == up
        lo = np.where(go_right, mid, lo)
        hi = np.where(go_right, hi, mid)
    p = (lo + hi) / 2
    r, t = r_ * np.cos(p), r_ * np.sin(p)
    log_n = (
        -0.5 * ((r - 1.0) / radial_std) ** 2
        - 0.5 * (t / tangential_std) ** 2
        - np.log(2 * np.pi * radial_std * tangential_std)
    )
    log_terms = log_n - np.log(np.abs(1 + rate * np.exp(r) * t)) - np.log(arms) - np.log(4.0)
    out = np.full(len(x), -np.inf)
    np.logaddexp.at(out, n_idx, log_terms)
    return out


TOY_SAMPLERS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "moons": two_moons,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
}
TOY_ALIASES = {"two_moons": "moons", "twomoons": "moons", "eight_gaussians": "8gaussians", "gaussians8": "8gaussians"}

TOY_LOG_DENSITIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "8gaussians": eight_gaussians_log_density,
    "checkerboard": checkerboard_log_density,
    "pinwheel": pinwheel_log_density,
}


def log_density(name: str, x) -> np.ndarray:
    """The exact log-density (nats) of the toy ``name`` at points ``x`` (n, 2) → (n,) float64.

    Raises :class:`DataError` for a toy without a closed form (``moons``) or an unknown name."""
    key = TOY_ALIASES.get(str(name).lower(), str(name).lower())
    if key not in TOY_LOG_DENSITIES:
        why = "has no closed-form density" if key in TOY_SAMPLERS else "is not a toy density"
        raise DataError(f"{name!r} {why} (known densities: {', '.join(TOY_LOG_DENSITIES)})", filename=str(name))
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise DataError(f"log_density takes points of shape (n, 2), got {x.shape}", filename=str(name))
    return TOY_LOG_DENSITIES[key](x)


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
