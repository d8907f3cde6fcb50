"""The causal cone of a set of pixels in an ``rg`` layer, as index tensors for incremental generation.

Pure geometry (CPU, int64, built once per hole); :meth:`flowdsl.runtime.layers.rg.RGFlow.cone_inverse`
only calls ``cat`` / ``index_select`` / ``reshape`` with it. Notation of
:mod:`flowdsl.runtime.layers._rg_lattice`: layers j = 0 … 2·levels−1 in application order, E = C·K²
entries per patch, S_j = the state after layer j's forward (in layer j's patch order).

The *cone* of a pixel set W (the hole) is, per layer j, the set M_j of patches whose entries can
influence a pixel of W in the generation direction z → x. It is found by pushing W through the
layers in the encoding direction (a patch holding a marked entry marks the whole patch), exactly as
:func:`~flowdsl.runtime.layers._rg_lattice.dependency_mask` does; the latents met on the way are the
*touched* latents T. The set is closed: every input entry of a patch in M_j (in the generation
direction) is either an output entry of a patch in M_{j+1} or a touched latent dropped at that
point. So the entries of the cone patches, hence the pixels

    window = every pixel of the patches of M_0 (a superset of W),

are a function of z_T alone and can be computed without the rest of the image:

    out = ()                                        # (B, 0)
    for j = last … 0:
        v   = cat(out, z_T)[:, gather_j]            # the inputs of the |M_j| cone patches
        out = body_j⁻¹(v as (B·|M_j|, C, K, K))     # one batched call, |M_j|·E entries
    x_window = out[:, out_order]                    # (B, C·|window|), channel-major

For a hole of fixed size |M_j| is bounded at every level, so a generation step costs O(levels) =
O(log L) patch evaluations instead of Σ_j P_j² = O(L²).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from flowdsl.runtime.layers._rg_lattice import RGPlan

__all__ = ["RGCone", "make_cone"]


@dataclass(frozen=True)
class RGCone:
    """Index tensors of the causal cone of a pixel set (see the module docstring).

    Attributes:
        latents: (n_T,) sorted pixel indices y·L + x of the touched latent positions; the compact
            latent vector is channel-major: entry c·n_T + k is channel c at ``latents[k]``.
        pixels: (n_W,) sorted pixel indices of the window; the output is channel-major likewise.
        gathers: per layer j (application order), (|M_j|·E,) indices into cat(out_{j+1}, z_T).
        patch_ids: per layer j, the (sorted) indices of the cone patches M_j in the layer's grid.
        out_order: (C·n_W,) indices into the output of layer 0's cone patches.
    """

    C: int
    L: int
    K: int
    latents: Tensor
    pixels: Tensor
    gathers: tuple[Tensor, ...]
    patch_ids: tuple[Tensor, ...]
    out_order: Tensor

    @property
    def patches(self) -> list[int]:
        """|M_j| per layer (application order): the patch evaluations of one generation."""
        return [int(p.numel()) for p in self.patch_ids]

    def to(self, device) -> "RGCone":
        """The same cone with every index tensor on ``device``."""
        mv = lambda t: t.to(device)  # noqa: E731
        return replace(
            self,
            latents=mv(self.latents),
            pixels=mv(self.pixels),
            gathers=tuple(mv(g) for g in self.gathers),
            patch_ids=tuple(mv(p) for p in self.patch_ids),
            out_order=mv(self.out_order),
        )


def _rank(members: Tensor, size: int) -> Tensor:
    """(size,) long: position of each index within the sorted ``members``, −1 elsewhere."""
    r = torch.full((size,), -1, dtype=torch.long)
    r[members] = torch.arange(members.numel())
    return r


def make_cone(plan: RGPlan, mask: Tensor) -> RGCone:
    """The cone of the pixels marked in ``mask`` (bool (L, L) or (C, L, L); any channel marks the
    pixel, since every patch carries all channels). Raises ValueError for an empty mask."""
    C, L, K = plan.C, plan.L, plan.K
    m = mask.to(torch.bool).cpu()
    if m.dim() == 3:
        m = m.any(0)
    if m.shape != (L, L):
        raise ValueError(f"mask must be ({L}, {L}) or ({C}, {L}, {L}), got {tuple(mask.shape)}")
    if not bool(m.any()):
        raise ValueError("the mask marks no pixel")
    N, L2, E = C * L * L, L * L, C * K * K
    # 1. push the mask through the layers (encoding direction): marked patches and touched latents
    state = m.reshape(1, L2).expand(C, L2).reshape(-1).clone()
    marked: list[Tensor] = []
    touched = torch.zeros(N, dtype=torch.bool)
    for lp in plan.layers:
        if lp.drop.numel():
            dropped = state[lp.drop]
            prev_flat = plan.layers[len(marked) - 1].flat
            touched[prev_flat[lp.drop][dropped]] = True
        state = state[lp.take]
        per_patch = state.view(lp.patches, E).any(dim=1)
        marked.append(per_patch)
        state = per_patch.view(-1, 1).expand(lp.patches, E).reshape(-1)
    touched[plan.layers[-1].flat[state]] = True
    t_pix = torch.nonzero(touched.view(C, L2).any(0)).view(-1)
    n_t = t_pix.numel()
    rank_t = _rank(t_pix, L2)
    ar = torch.arange(E)
    # 2. the gathers, layer by layer (generation direction)
    n = len(plan.layers)
    patch_ids = [torch.nonzero(mk).view(-1) for mk in marked]
    gathers: list[Tensor] = [torch.empty(0, dtype=torch.long)] * n
    for j in range(n):
        lp = plan.layers[j]
        pos = (patch_ids[j].view(-1, 1) * E + ar.view(1, E)).reshape(-1)  # positions in S_j
        flat = lp.flat[pos]
        lat_src = (flat // L2) * n_t + rank_t[flat % L2]  # as a touched latent
        from_latent = torch.ones(pos.numel(), dtype=torch.bool)
        if j == n - 1:  # the final state: every entry is a top-level latent
            src = lat_src
        else:
            nxt = plan.layers[j + 1]
            u = nxt.restore[pos]
            inside = u < nxt.take.numel()
            rank_m = _rank(patch_ids[j + 1], nxt.patches)
            from_patch = rank_m[(u // E).clamp_max(nxt.patches - 1)] * E + u % E
            n_prev = patch_ids[j + 1].numel() * E
            src = torch.where(inside, from_patch, n_prev + lat_src)
            assert bool((~inside | (from_patch >= 0)).all()), "cone not closed (patch)"
            from_latent = ~inside
        assert bool((rank_t[flat % L2][from_latent] >= 0).all()), "cone not closed (latent)"
        gathers[j] = src
    # 3. the window and the output order (layer 0 takes the image in flat order)
    pos0 = (patch_ids[0].view(-1, 1) * E + ar.view(1, E)).reshape(-1)
    flat0 = plan.layers[0].flat[pos0]
    w_pix = torch.unique(flat0 % L2)
    where = torch.full((N,), -1, dtype=torch.long)
    where[flat0] = torch.arange(flat0.numel())
    out_order = where[(torch.arange(C).view(C, 1) * L2 + w_pix.view(1, -1)).reshape(-1)]
    assert bool((out_order >= 0).all()), "window pixel without all its channels"
    return RGCone(C, L, K, t_pix, w_pix, tuple(gathers), tuple(patch_ids), out_order)
