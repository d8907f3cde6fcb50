"""RG-Flow lattice geometry: which pixels each ``rg`` layer touches, as index tensors.

Pure geometry, no parameters: everything here is computed once (on the CPU, int64) when an
``rg`` module is built and stored as buffers; :mod:`flowdsl.runtime.layers.rg` only calls
``index_select`` / ``reshape`` with them.

Notation (RG-Flow, Hu et al., arXiv 2010.00029). Image C×L×L, patch edge K (even), ``levels`` = number of RG levels
(``auto`` = log2(L/K) + 1). At level h the *current lattice* is the 2^h-lattice
Λ_h = {(y, x) : 2^h | y and 2^h | x}, n_h = L/2^h points per axis. A layer at level h cuts Λ_h
into P_h² = (L/(K·2^h))² non-overlapping K×K patches with dilation s = 2^h and stride K·s:

    patch (p, q), in-patch position (a, b)  ->  pixel ((o + s·a + K·s·p) mod L, (o + s·b + K·s·q) mod L)

with offset o = K·s/2 for the disentangler (shifted grid; the ``mod L`` is the wrap-around,
i.e. periodic boundaries) and o = 0 for the decimator (aligned grid). Because K is even, o is
a multiple of s, so both grids are exact partitions of Λ_h.

After level h (for h < levels−1) the pixels of Λ_h \\ Λ_{h+1} are the level-h latents and no
later layer touches them; the top level (h = levels−1) keeps Λ_{levels−1}. Equivalently
(the *lattice rule*)

    level(y, x) = min(v2(y), v2(x), levels − 1),      v2 = 2-adic valuation, v2(0) = ∞.

Per channel there are 3·(L/2^{h+1})² latents at level h < levels−1 and (L/2^{levels−1})² at the
top (K² when ``levels`` is ``auto``); for L=32, K=4: 768, 192, 48, 16.

Flat indices. The runtime works on a tensor of shape (B, N) whose entries are (channel, pixel)
pairs; the *flat index* of channel c, pixel (y, x) is c·L² + y·L + x (the order of
``x.reshape(B, C·L·L)``). A layer's *patch order* lists its entries patch-major, then channel,
then in-patch row and column, so that ``v.reshape(-1, C, K, K)`` is the batch of patches
(B·P², C, K, K) with no transpose.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowdsl.compiler.kinds.rg import auto_levels, is_power_of_two

__all__ = [
    "auto_levels",
    "is_power_of_two",
    "patch_pixels",
    "latent_levels",
    "latent_counts",
    "RGLayerPlan",
    "RGPlan",
    "make_plan",
    "dependency_mask",
    "cone_mask",
]


def patch_pixels(L: int, K: int, h: int, shifted: bool) -> Tensor:
    """Pixel indices y·L + x of every patch of the level-h layer, shape (P², K, K).

    ``shifted=True`` is the disentangler grid (offset K·2^h/2, wrap-around), ``False`` the
    decimator grid. Row (p·P + q) is patch (p, q); entry [a, b] is in-patch position (a, b).
    """
    s = 1 << h
    P = L // (K * s)
    if P < 1 or P * K * s != L:
        raise ValueError(f"level {h} does not fit: L={L}, K={K}")
    o = (K * s) // 2 if shifted else 0
    t = torch.arange(P).view(P, 1) * (K * s) + torch.arange(K).view(1, K) * s  # (P, K)
    t = (t + o) % L
    rows = t.view(P, 1, K, 1)
    cols = t.view(1, P, 1, K)
    return (rows * L + cols).reshape(P * P, K, K)


def _v2(n: Tensor, cap: int) -> Tensor:
    """min(v2(n), cap) elementwise, with v2(0) = ∞ (so 0 maps to ``cap``)."""
    out = torch.zeros_like(n)
    for k in range(1, cap + 1):  # cap = levels − 1 is tiny (≤ log2 L)
        out = out + (n % (1 << k) == 0).to(n.dtype)
    return out


def latent_levels(L: int, levels: int) -> Tensor:
    """The lattice rule level(y, x) = min(v2(y), v2(x), levels−1) as a LongTensor (L, L)."""
    ar = torch.arange(L)
    vy = _v2(ar, levels - 1).view(L, 1)
    vx = _v2(ar, levels - 1).view(1, L)
    return torch.minimum(vy, vx)


def latent_counts(L: int, levels: int) -> list[int]:
    """Number of latents per channel at each level (from the lattice rule)."""
    lv = latent_levels(L, levels)
    return [int((lv == h).sum()) for h in range(levels)]


@dataclass(frozen=True)
class RGLayerPlan:
    """Index tensors of one layer (level ``h``, part ``part``).

    Attributes:
        take: (C·n_h²,) positions in the previous state to gather, in this layer's patch order.
        drop: (C·(n_{h−1}² − n_h²),) positions in the previous state that leave as the latents of
            level h−1 (empty except for the first layer of a level h ≥ 1).
        restore: (len(previous state),) the inverse permutation of cat(take, drop): the previous
            state is ``cat([state, latents]).index_select(restore)``.
        flat: (C·n_h²,) the flat (channel, pixel) index of each entry in patch order.
        patches: P_h², the number of patches of this layer.
    """

    h: int
    part: str
    take: Tensor
    drop: Tensor
    restore: Tensor
    flat: Tensor
    patches: int


@dataclass(frozen=True)
class RGPlan:
    """All index tensors of an ``rg`` layer (see the module docstring).

    ``layers`` in application order: level0.disentangler, level0.decimator, level1.…;
    ``emit_order`` (C·L²,): flat index of each entry of cat(latents_0, …, latents_{levels−2}, top);
    ``to_image``: its inverse permutation (z_flat = cat(...).index_select(1, to_image)).
    """

    C: int
    L: int
    K: int
    levels: int
    layers: tuple[RGLayerPlan, ...]
    emit_order: Tensor
    to_image: Tensor
    latent_sizes: tuple[int, ...]


def _inverse_perm(p: Tensor) -> Tensor:
    inv = torch.empty_like(p)
    inv[p] = torch.arange(p.numel())
    return inv


def _channel_flat(pix: Tensor, C: int, L: int) -> Tensor:
    """(P², K, K) pixel indices -> (P²·C·K·K,) flat (channel, pixel) indices in patch order."""
    P2, K, _ = pix.shape
    c = torch.arange(C).view(1, C, 1, 1) * (L * L)
    return (c + pix.view(P2, 1, K, K)).reshape(-1)


def make_plan(C: int, L: int, K: int, levels: int) -> RGPlan:
    """Build every index tensor of an ``rg`` layer on a C×L×L image."""
    H = auto_levels(L, K)
    if not 1 <= levels <= H:
        raise ValueError(f"levels must be in [1, {H}], got {levels}")
    N = C * L * L
    cur = torch.arange(N)  # flat index of each entry of the current state
    layers: list[RGLayerPlan] = []
    emitted: list[Tensor] = []
    sizes: list[int] = []
    for h in range(levels):
        for part, shifted in (("disentangler", True), ("decimator", False)):
            flat = _channel_flat(patch_pixels(L, K, h, shifted), C, L)
            pos = torch.full((N,), -1, dtype=torch.long)
            pos[cur] = torch.arange(cur.numel())
            take = pos[flat]
            assert bool((take >= 0).all()), "layer leaves the current lattice"
            keep = torch.zeros(cur.numel(), dtype=torch.bool)
            keep[take] = True
            drop = torch.nonzero(~keep).view(-1)
            if drop.numel():
                emitted.append(cur[drop])
                sizes.append(int(drop.numel()))
            restore = _inverse_perm(torch.cat([take, drop]))
            layers.append(RGLayerPlan(h, part, take, drop, restore, flat, flat.numel() // (C * K * K)))
            cur = flat
    emitted.append(cur)
    sizes.append(int(cur.numel()))
    emit_order = torch.cat(emitted)
    return RGPlan(C, L, K, levels, tuple(layers), emit_order, _inverse_perm(emit_order), tuple(sizes))


def dependency_mask(plan: RGPlan, mask: Tensor) -> Tensor:
    """Which entries of z are structurally connected to the pixels in ``mask``.

    ``mask`` is a bool tensor (L, L) (or (C, L, L)); the result is a bool tensor (C, L, L):
    True where the latent's causal cone meets the mask. Each layer acts on whole patches, so
    the relation "same patch" is symmetric: the latents that depend on masked pixels in the
    encoding direction are exactly those whose generation cone (decoding direction) meets the
    mask. Every patch body is assumed to mix all entries of its patch (conservative).

    Computed by pushing the mask through the layers: a patch containing a marked entry marks
    the whole patch. Cost O(C·L²·levels); a loop over layers only.
    """
    C, L = plan.C, plan.L
    m = mask.to(torch.bool)
    if m.dim() == 2:
        m = m.unsqueeze(0).expand(C, L, L)
    state = m.reshape(-1).clone()
    latents: list[Tensor] = []
    for lp in plan.layers:
        if lp.drop.numel():
            latents.append(state[lp.drop])
        state = state[lp.take]
        per_patch = state.view(lp.patches, -1).any(dim=1, keepdim=True)
        state = per_patch.expand(lp.patches, state.numel() // lp.patches).reshape(-1)
    latents.append(state)
    z = torch.cat(latents)[plan.to_image]
    return z.view(C, L, L)


def cone_mask(plan: RGPlan, zmask: Tensor) -> Tensor:
    """The generation causal cone: which pixels of x can depend on the marked latents.

    ``zmask`` is a bool tensor (L, L) or (C, L, L) over latent positions; the result is a bool
    tensor (C, L, L) over pixels. Computed by running the layers in the generation (inverse)
    direction: a patch containing a marked entry marks the whole patch; pixels outside every
    marked patch are bit-for-bit unchanged when the marked latents change. Dual of
    :func:`dependency_mask`: pixel m is in ``cone_mask(e_l)`` iff latent l is in
    ``dependency_mask(e_m)``.
    """
    C, L = plan.C, plan.L
    m = zmask.to(torch.bool)
    if m.dim() == 2:
        m = m.unsqueeze(0).expand(C, L, L)
    parts = list(torch.split(m.reshape(-1)[plan.emit_order], list(plan.latent_sizes)))
    state = parts.pop()
    for lp in reversed(plan.layers):
        per_patch = state.view(lp.patches, -1).any(dim=1, keepdim=True)
        state = per_patch.expand(lp.patches, state.numel() // lp.patches).reshape(-1)
        if lp.drop.numel():
            state = torch.cat([state, parts.pop()])
        state = state[lp.restore]
    return state.view(C, L, L)
