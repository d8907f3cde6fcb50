"""The model scale FDRL works in, and the sources q′ the particles start from.

Model scale (:class:`DataScale`)
    images: raw levels k ∈ {0, …, L−1} map to v = 2k/(L−1) − 1 ∈ [−1, 1] (the paper normalises
    images to [−1, 1]); training batches add N(0, 0.03²) noise ("Gaussian dequantisation").
    A flow's sample x on the [0, 1) scale (bin k is [k/L, (k+1)/L)) maps to
    v = 2(L·x − ½)/(L−1) − 1, so bin centres land exactly on the levels; ``to_unit`` inverts it
    (``floor(L·to_unit(v))`` rounds v to the nearest level).
    vectors: an affine map per coordinate that sends the training data's bounding box
    [min, max] to [−1, 1] (``center`` and ``radius`` are buffers, saved with the run). Energy
    distances and plots are reported back on the data's own scale.

Sources (``source=...`` in the spec; the data-set source only from the command line)
    ``data_gaussian``  N(μ, Σ + 1e-4·I) fitted to the training set (model scale), full covariance
                       through a Cholesky factor; images are clamped to [−1, 1]. Fitting needs
                       about 20·D² bytes (:func:`flowdsl.compiler.kinds.fdrl.covariance_bytes`);
                       above ``max_bytes`` (``FLOWDSL_FDRL_MAX_COVARIANCE_BYTES``, 2 GiB) it is a
                       :class:`~flowdsl.errors.DataError` (the checker rejects such specs first).
    ``uniform``        U[−1, 1]^D on the model scale: the pixel range for images, the training
                       data's bounding box for vectors.
    ``prior``          samples of the spec's own flow at a temperature, its weights loaded from a
                       checkpoint (``--source-checkpoint``) and kept in the FDRL run.
    ``data``           a second data set (unpaired translation: e.g. digits of some classes
                       moved toward others), drawn like the training batches.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Optional

import torch
from torch import Tensor, nn

from flowdsl.compiler.kinds.fdrl import covariance_bytes, max_covariance_bytes
from flowdsl.errors import CheckpointError, DataError

__all__ = [
    "DataScale",
    "Source",
    "DataGaussianSource",
    "UniformSource",
    "PriorSource",
    "DataSource",
    "DATA_NOISE",
    "seed_from",
]

#: std of the Gaussian dequantisation noise added to image batches on the model scale
DATA_NOISE = 0.03


def seed_from(*parts: Any) -> int:
    """A 63-bit seed derived from ``parts`` (stable across processes and runs)."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") & ((1 << 63) - 1)


def gen(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(seed_from(*parts))


class DataScale(nn.Module):
    """Maps data to the model scale and back (see the module docstring)."""

    def __init__(self, shape: tuple[int, ...], levels: Optional[int]) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        self.levels = int(levels) if levels is not None else None
        if self.levels is None:
            d = math.prod(self.shape)
            self.register_buffer("center", torch.zeros(d))
            self.register_buffer("radius", torch.ones(d))

    @property
    def image(self) -> bool:
        return self.levels is not None

    @property
    def clamp(self) -> Optional[tuple[float, float]]:
        return (-1.0, 1.0) if self.image else None

    @torch.no_grad()
    def fit(self, x_raw: Tensor) -> None:
        """Vectors: fit the bounding box of the training data (images have a fixed scale)."""
        if self.image:
            return
        flat = x_raw.reshape(len(x_raw), -1).to(torch.float64)
        lo, hi = flat.min(0).values, flat.max(0).values
        self.center.copy_(((lo + hi) / 2).float())
        self.radius.copy_(((hi - lo) / 2).clamp_min(1e-6).float())

    def from_raw(self, x_raw: Tensor) -> Tensor:
        """Data as loaded (raw levels for images, real vectors) → model scale."""
        if self.image:
            return x_raw * (2.0 / (self.levels - 1)) - 1.0
        return ((x_raw.reshape(len(x_raw), -1) - self.center) / self.radius).reshape(x_raw.shape)

    def to_data(self, v: Tensor) -> Tensor:
        """Model scale → the data's scale (levels as reals for images, vectors as loaded)."""
        if self.image:
            return (v + 1.0) * ((self.levels - 1) / 2.0)
        return (v.reshape(len(v), -1) * self.radius + self.center).reshape(v.shape)

    def from_unit(self, x01: Tensor) -> Tensor:
        """A flow's sample (images on [0, 1); vectors real) → model scale."""
        if self.image:
            return 2.0 * (x01 * self.levels - 0.5) / (self.levels - 1) - 1.0
        return self.from_raw(x01)

    def to_unit(self, v: Tensor) -> Tensor:
        """Model scale → the [0, 1) scale of the flows and of image grids (vectors: data scale)."""
        if self.image:
            return ((v + 1.0) * ((self.levels - 1) / 2.0) + 0.5) / self.levels
        return self.to_data(v)

    def quantize(self, v: Tensor) -> Tensor:
        """Images: round to the nearest level (still on the model scale); vectors unchanged."""
        if not self.image:
            return v
        k = torch.round((v.clamp(-1, 1) + 1.0) * ((self.levels - 1) / 2.0))
        return k * (2.0 / (self.levels - 1)) - 1.0

    def batch(self, x_raw: Tensor, generator: Optional[torch.Generator] = None, noise: float = DATA_NOISE) -> Tensor:
        """A training batch on the model scale (images: plus N(0, noise²) dequantisation)."""
        v = self.from_raw(x_raw)
        if self.image and noise > 0:
            v = v + noise * torch.randn(v.shape, generator=generator, dtype=v.dtype)
        return v


class Source(nn.Module):
    """A distribution q′ to start particles from; ``sample(n, generator)`` on the model scale."""

    kind = ""

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind


class DataGaussianSource(Source):
    """N(μ, Σ + 1e-4·I) fitted to the training data on the model scale (full covariance)."""

    kind = "data_gaussian"

    def __init__(
        self,
        shape: tuple[int, ...],
        clamp: Optional[tuple[float, float]] = None,
        jitter: float = 1e-4,
        max_bytes: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        self.dims = math.prod(self.shape)
        self.clamp_range = clamp
        self.jitter = float(jitter)
        need = covariance_bytes(self.dims)
        limit = max_covariance_bytes() if max_bytes is None else int(max_bytes)
        if need > limit:
            raise DataError(
                f"source=data_gaussian needs a full {self.dims}×{self.dims} covariance: "
                f"about {need / 1024**3:.2f} GiB, above the "
                f"limit of {limit / 1024**3:.2f} GiB (FLOWDSL_FDRL_MAX_COVARIANCE_BYTES); "
                "use source=uniform or source=prior",
                filename="fdrl",
            )
        self.register_buffer("mean", torch.zeros(self.dims))
        self.register_buffer("chol", torch.eye(self.dims))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Fit μ and the Cholesky factor of Σ + jitter·I to ``x`` (N, *shape) on the model scale."""
        flat = x.reshape(len(x), -1).to(torch.float64)
        if flat.shape[0] < 2:
            raise DataError("source=data_gaussian needs at least 2 training examples", filename="fdrl")
        mu = flat.mean(0)
        xc = flat - mu
        cov = xc.T @ xc / (flat.shape[0] - 1)
        cov.diagonal().add_(self.jitter)
        chol, info = torch.linalg.cholesky_ex(cov)
        if int(info) != 0:
            raise DataError("source=data_gaussian: the data covariance is not positive definite", filename="fdrl")
        self.mean.copy_(mu.float())
        self.chol.copy_(chol.float())

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        eps = torch.randn((int(n), self.dims), generator=generator, dtype=self.mean.dtype)
        x = (self.mean + eps @ self.chol.T).reshape(int(n), *self.shape)
        if self.clamp_range is not None:
            x = x.clamp(*self.clamp_range)
        return x


class UniformSource(Source):
    """U[−1, 1]^D on the model scale."""

    kind = "uniform"

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        return torch.rand((int(n), *self.shape), generator=generator) * 2.0 - 1.0


class PriorSource(Source):
    """Samples of the spec's own flow (``flow.sample(n, temperature)``) mapped to the model scale."""

    kind = "prior"

    def __init__(self, flow: nn.Module, scale: DataScale, temperature: float = 1.0) -> None:
        super().__init__()
        self.flow = flow
        self.temperature = float(temperature)
        self._scale = [scale]  # not a submodule: its buffers belong to the FDRL model

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        seed = (
            int(torch.randint(0, 2**62, (1,), generator=generator))
            if generator is not None
            else seed_from("prior", torch.initial_seed())
        )
        was = self.flow.training
        self.flow.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                x01 = self.flow.sample(int(n), temperature=self.temperature)
        finally:
            self.flow.train(was)
        scale = self._scale[0]
        v = scale.from_unit(torch.nan_to_num(x01.float(), nan=0.5, posinf=1.0, neginf=0.0))
        if scale.clamp is not None:
            v = v.clamp(*scale.clamp)
        return v

    def describe(self) -> str:
        return f"prior (the flow's samples at temperature {self.temperature:g})"


def load_flow_into(flow: nn.Module, checkpoint: str, spec: Any) -> dict[str, Any]:
    """Load a trained flow (run folder or checkpoint) into ``flow``, the FDRL spec's own flow.

    The checkpoint is read and rebuilt by the training package (:func:`load_model`), then its
    weights must fit this spec's flow exactly (same layers and shapes); anything else is a
    :class:`CheckpointError`. Returns the checkpoint's fields.
    """
    from flowdsl.runtime.training.checkpoint import restore
    from flowdsl.runtime.training.models import load_model

    stored, model, ckpt = load_model(checkpoint)
    if tuple(stored.input.shape) != tuple(spec.input.shape):
        raise CheckpointError(
            f"the source checkpoint's flow {stored.name!r} has input {tuple(stored.input.shape)}, "
            f"this spec's is {tuple(spec.input.shape)}",
            filename=str(ckpt.get("path", checkpoint)),
        )
    try:
        restore(flow, {"model": model.state_dict(), "path": ckpt.get("path", str(checkpoint))})
    except CheckpointError as e:
        raise CheckpointError(
            f"the source checkpoint's flow ({stored.name!r}) is not this spec's flow ({spec.name!r}): {e.message}",
            filename=str(ckpt.get("path", checkpoint)),
            notes=(
                "source=prior refines samples of the layers written in this file; train them with objective mle first",
            ),
        ) from None
    flow.eval()
    return ckpt


class DataSource(Source):
    """A second data set (raw values) drawn at random, mapped like the training batches."""

    kind = "data"

    def __init__(self, x_raw: Tensor, scale: DataScale, name: str = "", noise: float = DATA_NOISE) -> None:
        super().__init__()
        self.register_buffer("x_raw", x_raw.float(), persistent=False)
        self._scale = [scale]
        self.name = name
        self.noise = noise

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        idx = torch.randint(0, self.x_raw.shape[0], (int(n),), generator=generator)
        return self._scale[0].batch(self.x_raw[idx], generator, self.noise)

    def describe(self) -> str:
        return f"data {self.name} ({self.x_raw.shape[0]} examples)"
