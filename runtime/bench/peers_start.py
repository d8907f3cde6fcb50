"""flowdsl started from zuko's initial weights: the peers benchmark's same-start runs.

Two libraries' models of one family differ in two ways: the implementation (the functions computed,
their gradients) and the initial draw of the parameters. On a small set (wine: 127 train rows, 36
test rows) the draw alone moves a model's test NLL by tenths of a nat/dim from seed to seed, far more
than the 0.02 margin being judged, so comparing independent draws says little about the first. A
same-start run removes the draw: the zuko model of the seed is built, and its parameters are copied
into flowdsl's model of the same family, which then trains in the shared loop exactly as zuko does.
What is left between the two runs is the implementation.

Weights map one to one:

* ``nsf``: flowdsl reverses the entries after every coupling, so an odd layer's net reads its inputs
  and writes its per-entry parameter blocks in reverse order of zuko's (whose mask alternates
  instead): the first layer's columns and the last layer's row blocks are flipped.
* ``maf``, ``maf_spline``: zuko's MADE deals its hidden units' degrees cyclically; flowdsl's MADE is
  given the same multiset (:meth:`MADE.set_hidden_degrees`, sorted) and the units are permuted into
  that sorted order, so every mask is zuko's with rows and columns permuted (checked).

Splines: zuko has no minimum bin width or height; flowdsl's 1e-3 stays, so the spline families
compute slightly different functions from the same weights (``tests/runtime/bench/test_peers.py``
checks equality with the minimum set to 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowdsl.runtime.bench.peers import Arch, Peer, _flowdsl, _seeded, _zuko, build_peer

__all__ = ["SAME_START", "zuko_made_degrees", "copy_zuko_start", "flowdsl_from_zuko", "build_run_peer"]

#: the library name of a same-start run (flowdsl's model from zuko's initial weights) in the tables
SAME_START = "flowdsl (zuko's start)"


def zuko_made_degrees(hyper) -> tuple[Tensor, Tensor]:
    """(degrees of the first hidden layer's units, of the second's) of zuko's 2-hidden-layer
    ``MaskedMLP``, in flowdsl's convention: a unit of degree m reads the m entries first in the order
    (first layer: the count of inputs it reads; second: the largest degree among the units it reads)."""
    m0, m1 = hyper[0].mask, hyper[2].mask
    d0 = m0.sum(dim=1)
    d1 = torch.stack([d0[row].max() for row in m1])
    return d0, d1


def _copy_made(made, hyper) -> None:
    from flowdsl.runtime.layers._made import MADE

    if not isinstance(made, MADE) or len(made.layers) != 1 or len(hyper) != 5:
        raise ValueError("same-start MAF runs need MADEs of 2 hidden layers in both libraries")
    d0, d1 = zuko_made_degrees(hyper)
    if sorted(d0.tolist()) != sorted(d1.tolist()):
        raise ValueError("zuko's hidden layers have different degree multisets")
    made.set_hidden_degrees(sorted(d0.tolist()))
    p0, p1 = torch.argsort(d0, stable=True), torch.argsort(d1, stable=True)
    masks = (hyper[0].mask[p0], hyper[2].mask[p1][:, p0], hyper[4].mask[:, p1])
    ours = (made.mask_first, made.mask_hidden, made.mask_out)
    if not all(torch.equal(a.bool(), b.cpu()) for a, b in zip(ours, masks)):
        raise ValueError("zuko's MADE connectivity is not a permutation of flowdsl's")
    made.first.weight.copy_(hyper[0].weight[p0])
    made.first.bias.copy_(hyper[0].bias[p0])
    made.layers[0].weight.copy_(hyper[2].weight[p1][:, p0])
    made.layers[0].bias.copy_(hyper[2].bias[p1])
    made.out.weight.copy_(hyper[4].weight[:, p1])
    made.out.bias.copy_(hyper[4].bias)


def _copy_coupling(ours: list[Tensor], theirs: list[Tensor], dim: int, arch: Arch) -> None:
    per, n_b = 3 * arch.bins - 1, dim - dim // 2
    if [p.shape for p in ours] != [p.shape for p in theirs] or len(ours) != 2 * (arch.depth + 1) * arch.layers:
        raise ValueError("the NSF models' parameters do not line up")
    k = 2 * (arch.depth + 1)
    for layer in range(arch.layers):
        src = [t.clone() for t in theirs[k * layer : k * (layer + 1)]]
        if layer % 2 == 1:
            src[0] = src[0].flip(1)
            src[-2] = src[-2].reshape(n_b, per, -1).flip(0).reshape(n_b * per, -1)
            src[-1] = src[-1].reshape(n_b, per).flip(0).reshape(-1)
        for dst, s in zip(ours[k * layer : k * (layer + 1)], src):
            dst.copy_(s)


@torch.no_grad()
def copy_zuko_start(ours: Peer, theirs: Peer, arch: Arch) -> None:
    """Make flowdsl's model ``ours`` compute zuko's ``theirs`` (same family, dim and arch): copy
    every parameter, re-masking flowdsl's MADEs to zuko's connectivity (see the module docstring)."""
    if (ours.library, theirs.library, ours.family) != ("flowdsl", "zuko", theirs.family):
        raise ValueError("copy_zuko_start takes a flowdsl model and zuko's model of the same family")
    if ours.family == "nsf":
        _copy_coupling(list(ours.module.parameters()), list(theirs.module.parameters()), ours.dim, arch)
        return
    from flowdsl.runtime.layers._made import MADE

    mades = [m for m in ours.module.modules() if isinstance(m, MADE)]
    hypers = [t.hyper for t in theirs.module.transform.transforms]
    if len(mades) != len(hypers):
        raise ValueError("the MAF models have different numbers of layers")
    for made, hyper in zip(mades, hypers):
        _copy_made(made, hyper)


def flowdsl_from_zuko(family: str, dim: int, arch: Arch, seed: int) -> Peer:
    """flowdsl's ``family`` model carrying zuko's initial weights of ``seed``: zuko's model is drawn
    first from the seeded global generator, exactly as ``build_peer("zuko", ...)`` draws it."""
    with _seeded(seed):
        theirs = _zuko(family, dim, arch, seed)
        ours = _flowdsl(family, dim, arch, seed)
    copy_zuko_start(ours, theirs, arch)
    return Peer(SAME_START, family, dim, ours.module, ours.log_prob, ours.sample)


def build_run_peer(library: str, family: str, dim: int, arch: Arch, seed: int = 0) -> Peer:
    """:func:`peers.build_peer`, plus the ``SAME_START`` library of the quality runs."""
    if library == SAME_START:
        return flowdsl_from_zuko(family, dim, arch, seed)
    return build_peer(library, family, dim, arch, seed)
