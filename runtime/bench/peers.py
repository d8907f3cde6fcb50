"""The same flows in flowdsl, zuko and nflows: NSF coupling, MAF affine and MAF spline.

Every architecture is written once as an :class:`Arch` (width ``hidden``, conditioner depth
``depth``, ``layers`` transforms, ``bins`` and ``bound`` of the rational-quadratic splines) and
built three times, with the same shapes everywhere:

* ``nsf`` (NSF coupling): flowdsl ``coupling(kind=spline, net=mlp)`` then ``permute(kind=reverse)``,
  × layers; zuko ``GeneralCouplingTransform`` with ``MonotonicRQSTransform``; nflows
  ``PiecewiseRationalQuadraticCouplingTransform`` (linear tails); the peers' masks alternate as the
  halves flowdsl's reversals give (:func:`_kept`).
* ``maf`` (MAF affine): flowdsl ``autoregressive(kind=affine)`` with orders natural / reverse
  alternating; zuko ``MAF`` (the same orders); nflows ``MaskedAffineAutoregressiveTransform`` with a
  ``ReversePermutation`` between layers.
* ``maf_spline`` (MAF spline): the same with ``autoregressive(kind=spline)``, zuko ``MAF`` with
  ``MonotonicRQSTransform``, nflows ``MaskedPiecewiseRationalQuadraticAutoregressiveTransform``.
* ``affine`` (flowdsl only): ``coupling(kind=affine, net=mlp)``, the NSF's twin of the same size.

Conditioners: MLPs with ``depth`` hidden layers of ``hidden`` units and flowdsl's activations (SiLU
in coupling nets, ReLU in MADEs; zuko and nflows are given the same), coupling nets take the kept
half (⌊D/2⌋ entries) and give (3K − 1) spline values per updated entry; MADEs take all D inputs and
give 2 (affine) or 3K − 1 values per entry. Bases: the standard normal.
What differs is each library's own parametrisation (initialisation, the scale's squashing, the
softmax scaling of bin sizes, minimum bin size and slope 1e-3), which is the point of the comparison.

Parameters: :func:`param_counts` gives the stored count and the effective count (masked-out weights
of a MADE not counted; biases all counted). Coupling nets have equal counts in all three; MADEs
store the same dense weights, but their hidden-unit degrees differ (flowdsl: a sorted even spread;
zuko and nflows: cyclic), so the effective MAF counts differ slightly and are reported side by side.

Quality and speed: :mod:`flowdsl.runtime.bench.peers_runs`; the report section:
:func:`peers_section` (``flowdsl bench --sections peers``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "Arch",
    "Peer",
    "FAMILIES",
    "LIBRARIES",
    "flowdsl_spec_text",
    "build_peer",
    "param_counts",
    "available_libraries",
]

#: model family -> description
FAMILIES = {
    "nsf": "NSF coupling (rational-quadratic spline)",
    "maf": "MAF affine",
    "maf_spline": "MAF spline",
    "affine": "affine coupling (flowdsl, the NSF's twin)",
}
LIBRARIES = ("flowdsl", "zuko", "nflows")


@dataclass(frozen=True)
class Arch:
    """One size for every library: ``layers`` transforms, conditioner MLPs of ``depth`` hidden
    layers × ``hidden`` units, splines of ``bins`` bins on [−bound, bound] (identity outside)."""

    hidden: int = 64
    depth: int = 2
    layers: int = 4
    bins: int = 8
    bound: float = 5.0


@dataclass
class Peer:
    """One built model: ``log_prob(x)`` (B, D) → (B,) nats, ``sample(n)`` → (n, D), the
    trainable ``module``; ``compiled`` marks a flowdsl model (fused + compiled for timing)."""

    library: str
    family: str
    dim: int
    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]


def available_libraries() -> list[str]:
    """flowdsl and whichever of zuko / nflows import (benchmark-only dependencies)."""
    out = ["flowdsl"]
    for name in ("zuko", "nflows"):
        try:
            __import__(name)
        except ImportError:
            continue
        out.append(name)
    return out


# ----------------------------------------------------------------------------- flowdsl
def flowdsl_spec_text(family: str, dim: int, arch: Arch) -> str:
    """The spec of ``family`` on vectors of ``dim`` entries (see the module docstring)."""
    a = arch
    lines: list[str] = []
    for i in range(a.layers):
        if family == "nsf":
            lines.append(
                f"coupling(kind=spline, bins={a.bins}, bound={a.bound}, net=mlp, hidden={a.hidden}, depth={a.depth})"
            )
            lines.append("permute(kind=reverse)")
        elif family == "affine":
            lines.append(f"coupling(kind=affine, net=mlp, hidden={a.hidden}, depth={a.depth})")
            lines.append("permute(kind=reverse)")
        elif family in ("maf", "maf_spline"):
            kind = "affine" if family == "maf" else f"spline, bins={a.bins}, bound={a.bound}"
            order = "natural" if i % 2 == 0 else "reverse"
            lines.append(
                f"autoregressive(kind={kind}, hidden={a.hidden}, depth={a.depth}, order={order}, direction=forward)"
            )
        else:
            raise ValueError(f"unknown family {family!r}")
    body = "\n".join("    " + line for line in lines)
    return (
        f"# peers benchmark: {FAMILIES[family]}, {a.layers} layers, hidden {a.hidden}, depth {a.depth}\n"
        f"flow peer_{family} {{\n    input vector(dim={dim})\n{body}\n    prior gaussian\n}}\n"
    )


def _flowdsl(family: str, dim: int, arch: Arch, seed: int) -> Peer:
    import flowdsl

    spec = flowdsl.parse(flowdsl_spec_text(family, dim, arch), filename=f"<peer {family}>")
    model = flowdsl.compile(spec, seed=seed)
    return Peer("flowdsl", family, dim, model, model.log_prob, lambda n: model.sample(n))


# ----------------------------------------------------------------------------- shared pieces
class _MLP(nn.Sequential):
    """Linear → SiLU → (depth−1) × (Linear → SiLU) → Linear (the libraries' own default init).
    ``hidden_features`` is the attribute nflows reads to scale the spline's bin logits."""

    def __init__(self, n_in: int, n_out: int, hidden: int, depth: int) -> None:
        layers: list[nn.Module] = [nn.Linear(n_in, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, n_out))
        super().__init__(*layers)
        self.hidden_features = hidden

    def forward(self, x: Tensor, context=None) -> Tensor:  # nflows passes a context
        return super().forward(x)


def _kept(dim: int, layer: int) -> Tensor:
    """Bool (D,): the entries flowdsl's layer ``layer`` keeps (conditions on), in the input's
    coordinates. flowdsl keeps the first ⌊D/2⌋ entries of its input and reverses after every
    coupling, so even layers keep the first ⌊D/2⌋ coordinates, odd layers the last ⌊D/2⌋."""
    c1 = dim // 2
    m = torch.zeros(dim, dtype=torch.bool)
    if layer % 2 == 0:
        m[:c1] = True
    else:
        m[dim - c1 :] = True
    return m


@contextlib.contextmanager
def _seeded(seed: int):
    """zuko and nflows initialise from torch's global generator: fork it, seed it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ----------------------------------------------------------------------------- zuko
def _zuko(family: str, dim: int, arch: Arch, seed: int) -> Peer:
    from functools import partial

    import zuko
    from zuko.distributions import DiagNormal
    from zuko.flows.coupling import GeneralCouplingTransform
    from zuko.lazy import Flow, UnconditionalDistribution
    from zuko.transforms import MonotonicRQSTransform

    a = arch
    hidden = [a.hidden] * a.depth
    spline = {
        "univariate": partial(MonotonicRQSTransform, bound=a.bound, slope=1e-3),
        "shapes": [(a.bins,), (a.bins,), (a.bins - 1,)],
    }
    if family == "nsf":
        transforms = [
            GeneralCouplingTransform(dim, mask=_kept(dim, i), hidden_features=hidden, activation=nn.SiLU, **spline)
            for i in range(a.layers)
        ]
        base = UnconditionalDistribution(DiagNormal, loc=torch.zeros(dim), scale=torch.ones(dim), buffer=True)
        flow = Flow(transforms, base)
    elif family in ("maf", "maf_spline"):
        kw = spline if family == "maf_spline" else {}
        flow = zuko.flows.MAF(dim, transforms=a.layers, hidden_features=hidden, activation=nn.ReLU, **kw)
    else:
        raise ValueError(f"zuko has no {family!r} model here")
    return Peer("zuko", family, dim, flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))


# ----------------------------------------------------------------------------- nflows
def _nflows(family: str, dim: int, arch: Arch, seed: int) -> Peer:
    import torch.nn.functional as F
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.autoregressive import (
        MaskedAffineAutoregressiveTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
    )
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
    from nflows.transforms.permutations import ReversePermutation

    a = arch
    spline = {
        "num_bins": a.bins,
        "tails": "linear",
        "tail_bound": a.bound,
        "min_bin_width": 1e-3,
        "min_bin_height": 1e-3,
        "min_derivative": 1e-3,
    }
    ts: list[nn.Module] = []
    for i in range(a.layers):
        if family == "nsf":  # nflows' mask: > 0 transformed, ≤ 0 kept
            mask = torch.where(_kept(dim, i), -1, 1)
            ts.append(
                PiecewiseRationalQuadraticCouplingTransform(
                    mask, lambda n_in, n_out: _MLP(n_in, n_out, a.hidden, a.depth), **spline
                )
            )
        elif family in ("maf", "maf_spline"):
            made = {
                "hidden_features": a.hidden,
                "num_blocks": a.depth - 1,  # the first layer + depth−1 blocks = depth hidden layers
                "use_residual_blocks": False,
                "activation": F.relu,
            }
            if family == "maf":
                ts.append(MaskedAffineAutoregressiveTransform(dim, **made))
            else:
                ts.append(MaskedPiecewiseRationalQuadraticAutoregressiveTransform(dim, **made, **spline))
            if i < a.layers - 1:
                ts.append(ReversePermutation(dim))
        else:
            raise ValueError(f"nflows has no {family!r} model here")
    flow = Flow(CompositeTransform(ts), StandardNormal([dim]))
    return Peer("nflows", family, dim, flow, flow.log_prob, flow.sample)


_BUILDERS = {"flowdsl": _flowdsl, "zuko": _zuko, "nflows": _nflows}


def build_peer(library: str, family: str, dim: int, arch: Arch, seed: int = 0) -> Peer:
    """``family`` on vectors of ``dim`` entries in ``library``, parameters initialised from ``seed``
    (the global random state is left alone)."""
    with _seeded(seed):
        return _BUILDERS[library](family, dim, arch, seed)


def param_counts(module: nn.Module) -> tuple[int, int]:
    """(stored, effective) parameter counts: effective leaves out the weights a MADE's mask zeroes
    (a submodule with a ``mask`` buffer of its weight's shape); every bias counts."""
    stored = sum(p.numel() for p in module.parameters())
    masked_out = 0
    for m in module.modules():
        w, mask = getattr(m, "weight", None), getattr(m, "mask", None)
        if isinstance(w, Tensor) and isinstance(mask, Tensor) and mask.shape == w.shape:  # zuko, nflows
            masked_out += int((mask == 0).sum())
        if isinstance(getattr(m, "mask_first", None), Tensor):  # flowdsl's MADE: masks kept beside the Linears
            masked_out += int((m.mask_first == 0).sum()) + int((m.mask_out == 0).sum())
            masked_out += len(m.layers) * int((m.mask_hidden == 0).sum())
    return stored, stored - masked_out
