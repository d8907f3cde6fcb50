"""``prior student_t(df=5.0, learned=false)``: a factorised Student-t base (heavy tails).

Per latent entry, with location μ, scale σ and ν = df degrees of freedom:

    log p(z_i) = lgamma((ν+1)/2) − lgamma(ν/2) − ½ log(νπ) − log σ − (ν+1)/2 · log1p(u²/ν),
    u = (z_i − μ)/σ,   log p(z) = Σ_i log p(z_i).

``learned=false``: μ = 0, σ = 1 and ν = ``df`` everywhere (no parameters; the normaliser is a
Python float). ``learned=true``: μ, log σ and log ν per entry are parameters (3·numel), starting
at 0, 0 and log(df); ν = exp(log ν) and σ = exp(log σ) stay positive. lgamma of a learned ν is
:func:`lgamma` below, built from elementwise operations (torch's lgamma has no ONNX operator, and
the log-density is part of ``forward.onnx``).

Sampling (``from_noise`` with noise "uniform" v and "normal" ε, each (B, *shape)) by Bailey's polar
method without its rejection step (R. W. Bailey, "Polar generation of random variates with the
t-distribution", Math. Comp. 62 (1994) 779–781): a point uniform in the unit disc has squared
radius W ~ U(0, 1] and an independent uniform angle θ, and t = cos θ · sqrt(ν (W^(−2/ν) − 1)) is
exactly t-distributed with ν degrees of freedom. Here

    W = 1 − v ∈ (0, 1],   cos θ = cos(π·Φ(ε)) with Φ(ε) = ½(1 + erf(ε/√2)) ~ U(0, 1),
    z = μ + T·σ·t,

only comparisons, exp, log, cos, erf and sqrt: ONNX exportable. Temperature T scales the width;
ν is kept. W^(−2/ν) − 1 is computed as expm1(min(−(2/ν)·log W, 80)) (Kahan's form of expm1 from
exp and log, :func:`expm1`: ONNX has no Expm1 operator): the cap keeps float32 finite
and truncates draws beyond sqrt(ν·e^80) (probability below e^(−40ν): 1e-87 at ν = 5).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowdsl.runtime.priors.base import Prior
from flowdsl.runtime.priors.lowering import prior_lowering

__all__ = ["StudentTPrior", "lgamma", "expm1"]

#: cap of −(2/ν)·log W in the sampler (keeps exp finite in float32)
_MAX_EXPONENT = 80.0
#: lgamma(x) = lgamma(x + _SHIFT) − Σ_{k<_SHIFT} log(x + k), then Stirling's series at x + _SHIFT ≥ 10
_SHIFT = 10
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680)


def lgamma(x: Tensor) -> Tensor:
    """log Γ(x) for x > 0 from elementwise operations (ONNX exportable, differentiable).

    Recurrence to y = x + 10, then Stirling's series (y − ½) log y − y + ½ log 2π + Σ c_j / y^(2j−1)
    with four terms: the truncation error is below 1/(1188·y⁹) < 1e-12 (≈ float64 rounding for the
    sums here), so it matches ``math.lgamma`` to ~1e-12 relative.
    """
    shift = torch.zeros_like(x)
    for k in range(_SHIFT):
        shift = shift + torch.log(x + k)
    y = x + _SHIFT
    inv = 1.0 / y
    inv2 = inv * inv
    series = inv * (_STIRLING[0] + inv2 * (_STIRLING[1] + inv2 * (_STIRLING[2] + inv2 * _STIRLING[3])))
    return (y - 0.5) * torch.log(y) - y + 0.5 * math.log(2 * math.pi) + series - shift


def expm1(x: Tensor) -> Tensor:
    """e^x − 1 to full relative precision near 0 without an Expm1 operator (ONNX has none):
    Kahan's (u − 1)·x / log u with u = e^x (x where u rounds to 1). For finite x ≤ 80."""
    u = torch.exp(x)
    one = u == 1.0
    log_u = torch.where(one, torch.ones_like(u), torch.log(u))
    return torch.where(one, x, (u - 1.0) * x / log_u)


def _log_norm_float(df: float) -> float:
    """lgamma((ν+1)/2) − lgamma(ν/2) − ½ log(νπ) for a fixed ν (exact, Python floats)."""
    return math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)


class StudentTPrior(Prior):
    """Per-entry Student-t over latents of ``shape`` (see the module docstring).

    Example:
        >>> p = StudentTPrior((3,), df=5.0)
        >>> p.log_prob(torch.zeros(2, 3)).shape, p.sample(4).shape
        (torch.Size([2]), torch.Size([4, 3]))
    """

    noise = ("uniform", "normal")

    def __init__(self, shape: tuple[int, ...], df: float = 5.0, learned: bool = False) -> None:
        super().__init__()
        if not (math.isfinite(df) and df > 0):
            raise ValueError(f"student_t df must be a finite number > 0, got {df!r}")
        self.shape = tuple(int(d) for d in shape)
        self.df = float(df)
        self.learned = bool(learned)
        if learned:
            self.loc = nn.Parameter(torch.zeros(self.shape))
            self.log_scale = nn.Parameter(torch.zeros(self.shape))
            self.log_df = nn.Parameter(torch.full(self.shape, math.log(df)))
        else:
            self._log_norm = _log_norm_float(self.df)
            # carries the module's device and floating dtype only
            self.register_buffer("_ref", torch.zeros(()), persistent=False)

    def degrees_of_freedom(self, dtype: torch.dtype | None = None) -> Tensor:
        """ν: the learned per-entry tensor, or a 0-d tensor of the fixed ``df``."""
        if self.learned:
            return torch.exp(self.log_df if dtype is None else self.log_df.to(dtype))
        return torch.full((), self.df, dtype=dtype or self._ref.dtype, device=self._ref.device)

    def log_prob_elementwise(self, z: Tensor) -> Tensor:
        """log p(z_i) for every entry, same shape as ``z``."""
        if not self.learned:
            nu = self.df
            return self._log_norm - 0.5 * (nu + 1) * torch.log1p(z * z / nu)
        loc, log_s, log_nu = (t.to(z.dtype) for t in (self.loc, self.log_scale, self.log_df))
        nu = torch.exp(log_nu)
        u = (z - loc) * torch.exp(-log_s)
        log_norm = lgamma(0.5 * (nu + 1)) - lgamma(0.5 * nu) - 0.5 * (log_nu + math.log(math.pi))
        return log_norm - log_s - 0.5 * (nu + 1) * torch.log1p(u * u / nu)

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) in nats, (B,), for z of shape (B, *shape)."""
        lp = self.log_prob_elementwise(z)
        return lp.reshape(lp.shape[0], -1).sum(1)

    def sample(self, n: int, temperature: float = 1.0, device=None, dtype=None) -> Tensor:
        ref = self.loc if self.learned else self._ref
        dtype = dtype or ref.dtype
        device = device or ref.device
        size = (int(n), *self.shape)
        v = torch.rand(size, device=device, dtype=dtype)
        eps = torch.randn(size, device=device, dtype=dtype)
        return self.from_noise({"uniform": v, "normal": eps}, temperature)

    def from_noise(self, noise: dict[str, Tensor], temperature=1.0) -> Tensor:
        """z = μ + T·σ·t with t by Bailey's polar construction from v and ε (module docstring)."""
        v, eps = noise["uniform"], noise["normal"]
        cos_theta = torch.cos(math.pi * 0.5 * (1.0 + torch.erf(eps * (1.0 / math.sqrt(2.0)))))
        log_w = torch.log(1.0 - v)  # W = 1 − v ∈ (0, 1]
        if self.learned:
            nu = torch.exp(self.log_df.to(eps.dtype))
            expo = torch.clamp(-2.0 * log_w / nu, max=_MAX_EXPONENT)
            t = cos_theta * torch.sqrt(nu * expm1(expo))
            return self.loc.to(eps.dtype) + temperature * torch.exp(self.log_scale.to(eps.dtype)) * t
        expo = torch.clamp(log_w * (-2.0 / self.df), max=_MAX_EXPONENT)
        return temperature * (cos_theta * torch.sqrt(self.df * expm1(expo)))

    def extra_repr(self) -> str:
        return f"shape={self.shape}, df={self.df:g}, learned={self.learned}"


@prior_lowering("student_t")
def lower_student_t(args, shape):
    return StudentTPrior(shape, args.df, args.learned)
