"""``rg``: the RG-Flow hierarchical (MERA-like) layer (Hu et al., arXiv 2010.00029).

Spec syntax::

    rg(kernel=4, levels=auto) {
        disentangler { coupling(kind=affine, net=mlp, mask=checkerboard, hidden=64) }
        decimator    { coupling(kind=affine, net=mlp, mask=checkerboard, hidden=64) }
    }

Shapes: x (B, C, L, L) -> z (B, C, L, L), logdet (B,). Square images only; K = ``kernel`` even,
K ≥ 2, L/K a power of two; ``levels`` = ``auto`` (H = log2(L/K) + 1) or an integer
1 ≤ levels ≤ H. A smaller ``levels`` truncates the hierarchy: the top level h = levels−1 keeps
its whole 2^h-lattice (several patches) as latents, and the lattice rule below uses the cap
levels−1.

Math. At level h = 0 … levels−1 (s = 2^h):

    1. disentangler: the K×K patches of the 2^h-lattice with dilation s, stride K·s, shifted by
       K·s/2 on both axes with wrap-around (periodic boundary);
    2. decimator: the same patches without the shift.

Every patch of a layer goes through the layer's body (a ``Chain`` acting on (C, K, K)) in ONE
batched call: the entries are gathered with precomputed index tensors into (B·P², C, K, K),
transformed, and the result is kept in that order (the next gather composes the scatter-back
with the next layer's gather, so a layer costs one ``index_select``). log|det J| is the sum over
layers and patches of the per-patch log-dets. After level h < levels−1 the pixels of the
2^h-lattice that are not on the 2^{h+1}-lattice are the level-h latents; they leave the state
and are never touched again. At the end one ``index_select`` puts every latent back at its
pixel, so z has the image layout and ``latent_levels()`` gives each position's level:

    level(y, x) = min(v2(y), v2(x), levels − 1)

Each level has its own parameters (the compiler builds one body ``Chain`` per instance
``level{h}.disentangler`` / ``level{h}.decimator``). A part that is missing or empty in the file
is the identity at every level (e.g. ``rg { decimator { ... } }`` is the tree-structured flow
without disentanglers).

Incremental generation (inpainting): :meth:`RGFlow.cone_inverse` regenerates only the patches in
the causal cone of a pixel set (:mod:`flowdsl.runtime.layers._rg_cone`), O(log L) patches for a
hole of fixed size, from the latents that cone touches.

Context (conditional flows): a body whose couplings read the context gets it per patch, in the
patch batch order (example b, patch p -> row b·P² + p): a label/vector context (raw and (B, E)
embedding) repeated P² times; an image context as its feature map at the image's size
(``context_features`` at (C, L, L)) gathered at each patch's pixels, (B·P², E, K, K), so every
patch sees the context where it lies (the raw image is repeated per patch). The module uses the
context iff one of its bodies does.

``inverse_with_log_det`` is one pass: every body runs ``inverse_with_log_det`` on its patches.

Export: only ``index_select`` (ONNX Gather), ``reshape`` and ``cat``; dynamic batch (every
reshape uses −1 for the batch); no in-place writes, no ``.item()``; ``torch.compile`` captures
it with ``fullgraph=True``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowdsl.compiler.kinds.rg import PARTS, RGKind, body_labels
from flowdsl.runtime.bijector import Bijector, Chain, call_forward, call_inverse, call_inverse_with_log_det
from flowdsl.runtime.context import ContextValue, context_features, expand_context
from flowdsl.runtime.layers._rg_cone import RGCone, make_cone
from flowdsl.runtime.layers._rg_lattice import (
    RGPlan,
    dependency_mask,
    latent_levels,
    make_plan,
)
from flowdsl.runtime.layers.lowering import lowering

__all__ = ["RGFlow", "PARTS", "body_labels"]


class _Identity(Bijector):
    """Stand-in for a missing or empty part."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y

    def inverse_with_log_det(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y, y.new_zeros(y.shape[0])


class RGFlow(Bijector):
    """The ``rg`` module: a hierarchy of patch bijectors on dilated, shifted lattices.

    Args:
        shape: (C, L, L).
        kernel: patch edge K (even, L/K a power of two).
        levels: number of RG levels (1 … log2(L/K)+1).
        bodies: maps ``level{h}.disentangler`` / ``level{h}.decimator`` to a bijector acting on
            (B·P², C, K, K); a missing label (or a ``Chain`` with no layers) is the identity.

    Buffers (not saved in checkpoints; rebuilt from the shape): ``take{j}``, ``restore{j}``,
    ``drop{j}`` per layer j, ``to_image`` and ``emit_order``.
    """

    def __init__(
        self, shape: tuple[int, ...], kernel: int, levels: int, bodies: dict[str, nn.Module] | None = None
    ) -> None:
        super().__init__()
        C, L, W = shape
        if L != W:
            raise ValueError(f"needs a square image, got {L}×{W}")
        self.shape = (C, L, W)
        self.kernel = kernel
        self.levels = levels
        plan = make_plan(C, L, kernel, levels)
        self._sizes = plan.latent_sizes
        self._patches = [lp.patches for lp in plan.layers]
        self._has_drop = [lp.drop.numel() > 0 for lp in plan.layers]
        for j, lp in enumerate(plan.layers):
            self.register_buffer(f"take{j}", lp.take, persistent=False)
            self.register_buffer(f"drop{j}", lp.drop, persistent=False)
            self.register_buffer(f"restore{j}", lp.restore, persistent=False)
            # pixel index y·L + x of every patch entry (patch-major, then row, column): channel 0's
            pix = lp.flat.view(lp.patches, C, kernel * kernel)[:, 0].reshape(-1)
            self.register_buffer(f"pix{j}", pix, persistent=False)
        self.register_buffer("to_image", plan.to_image, persistent=False)
        self.register_buffer("emit_order", plan.emit_order, persistent=False)
        bodies = dict(bodies or {})
        mods = []
        for _, label in body_labels(levels):
            b = bodies.pop(label, None)
            if b is None or (isinstance(b, Chain) and len(b.layers) == 0):
                b = _Identity()
            mods.append(b)
        if bodies:
            raise ValueError(f"rg: unknown body labels {sorted(bodies)}")
        #: bodies in application order (module names "0", "1", …; see ``labels``)
        self.bodies = nn.ModuleList(mods)
        self.labels = [label for _, label in body_labels(levels)]
        self.uses_context = any(b.uses_context for b in mods)

    # -- geometry ---------------------------------------------------------------------------
    def plan(self) -> RGPlan:
        """The index tensors (recomputed on the CPU; for tools and tests)."""
        return make_plan(self.shape[0], self.shape[1], self.kernel, self.levels)

    def latent_levels(self) -> Tensor:
        """LongTensor (C, L, L): the RG level of each latent position (the lattice rule)."""
        C, L, _ = self.shape
        return latent_levels(L, self.levels).unsqueeze(0).expand(C, L, L).clone()

    def dependency_mask(self, mask: Tensor) -> Tensor:
        """Bool (C, L, L): latents whose causal cone meets ``mask`` ((L, L) or (C, L, L))."""
        return dependency_mask(self.plan(), mask.cpu())

    def cone(self, mask: Tensor) -> RGCone:
        """The causal cone of the pixels in ``mask`` ((L, L) or (C, L, L)), on this module's device
        (:func:`~flowdsl.runtime.layers._rg_cone.make_cone`)."""
        return make_cone(self.plan(), mask.cpu()).to(self.to_image.device)

    def cone_inverse(self, zt: Tensor, cone: RGCone, context: ContextValue | None = None) -> Tensor:
        """Incremental generation: the window pixels of the cone from the touched latents alone.

        zt (B, C·n_T) channel-major (entry c·n_T + k = channel c at pixel ``cone.latents[k]``)
        -> x (B, C·n_W) channel-major over ``cone.pixels``; equal to :meth:`inverse` of any z that
        holds ``zt`` at the touched positions, restricted to the window. Only the |M_j| cone
        patches of each layer go through the body (one batched call per layer): O(log L) patches
        for a hole of fixed size, against Σ_j P_j² for :meth:`inverse`. ``context``: the
        flow's context (conditional bodies), handed to the cone patches as in :meth:`inverse`.
        """
        C, K = self.shape[0], self.kernel
        out = zt[:, :0]
        for j in reversed(range(len(self.bodies))):
            v = torch.cat([out, zt], dim=1).index_select(1, cone.gathers[j])
            body = self.bodies[j]
            pc = self._patch_context(j, context, cone.patch_ids[j]) if body.uses_context else None
            out = call_inverse(body, v.reshape(-1, C, K, K), pc).reshape(zt.shape[0], -1)
        return out.index_select(1, cone.out_order)

    # -- bijector ---------------------------------------------------------------------------
    def _buf(self, name: str, j: int) -> Tensor:
        return getattr(self, f"{name}{j}")

    def _patch_context(self, j: int, context: ContextValue | None, patch_ids: Tensor | None = None):
        """The context of every patch of layer j (all P², or the patches ``patch_ids``), in the
        patch batch order (see the module docstring)."""
        if context is None:
            return None
        pix = self._buf("pix", j)
        n = self._patches[j]
        if patch_ids is not None:
            K2 = self.kernel * self.kernel
            pix = pix.view(n, K2).index_select(0, patch_ids).reshape(-1)
            n = patch_ids.numel()
        if context.embedding.dim() == 2:
            return expand_context(context, n)
        C, L, _ = self.shape
        K = self.kernel
        feats = context_features(context, self.shape)  # (B, E, L, L)
        E = feats.shape[1]
        g = feats.reshape(feats.shape[0], E, L * L).index_select(2, pix)  # (B, E, n·K·K)
        emb = g.reshape(-1, E, n, K, K).permute(0, 2, 1, 3, 4).reshape(-1, E, K, K)
        return ContextValue(expand_context(context, n).raw, emb)

    def _patch_call(self, j: int, v: Tensor, mode: str, context: ContextValue | None) -> tuple[Tensor, Tensor | None]:
        """Run body j on every patch of state v (B, P²·C·K·K) in one call; ``mode`` is
        "forward", "inverse" or "inverse_ld" (the inverse with the forward log-det)."""
        C, K = self.shape[0], self.kernel
        n = v.shape[1]
        u = v.reshape(-1, C, K, K)  # (B·P², C, K, K): the state is already in patch order
        body = self.bodies[j]
        pc = self._patch_context(j, context) if body.uses_context else None
        if mode == "inverse":
            return call_inverse(body, u, pc).reshape(-1, n), None
        if mode == "forward":
            u, ld = call_forward(body, u, pc)
        else:
            u, ld = call_inverse_with_log_det(body, u, pc)
        return u.reshape(-1, n), ld.reshape(-1, self._patches[j]).sum(dim=1)

    def forward(self, x: Tensor, context: ContextValue | None = None) -> tuple[Tensor, Tensor]:
        """x (B, C, L, L) -> (z (B, C, L, L), logdet (B,))."""
        C, L, W = self.shape
        v = x.reshape(-1, C * L * W)
        logdet = x.new_zeros(x.shape[0])
        latents: list[Tensor] = []
        for j in range(len(self.bodies)):
            if self._has_drop[j]:
                latents.append(v.index_select(1, self._buf("drop", j)))
            v = v.index_select(1, self._buf("take", j))
            v, ld = self._patch_call(j, v, "forward", context)
            logdet = logdet + ld
        latents.append(v)
        z = torch.cat(latents, dim=1).index_select(1, self.to_image)
        return z.reshape(-1, C, L, W), logdet

    def _backward(self, z: Tensor, context: ContextValue | None, with_ld: bool) -> tuple[Tensor, Tensor | None]:
        C, L, W = self.shape
        parts = torch.split(z.reshape(-1, C * L * W).index_select(1, self.emit_order), list(self._sizes), dim=1)
        v = parts[-1]
        k = len(parts) - 2
        logdet = z.new_zeros(z.shape[0]) if with_ld else None
        for j in reversed(range(len(self.bodies))):
            v, ld = self._patch_call(j, v, "inverse_ld" if with_ld else "inverse", context)
            if with_ld:
                logdet = logdet + ld
            if self._has_drop[j]:
                v = torch.cat([v, parts[k]], dim=1)
                k -= 1
            v = v.index_select(1, self._buf("restore", j))
        return v.reshape(-1, C, L, W), logdet

    def inverse(self, z: Tensor, context: ContextValue | None = None) -> Tensor:
        """z (B, C, L, L) -> x (B, C, L, L), the exact inverse of :meth:`forward`."""
        return self._backward(z, context, False)[0]

    def inverse_with_log_det(self, z: Tensor, context: ContextValue | None = None) -> tuple[Tensor, Tensor]:
        """(x, log|det ∂z/∂x| at x) in one pass (see the module docstring)."""
        return self._backward(z, context, True)

    def _frozen(self) -> "RGFlow":
        bodies = {label: b.frozen() for label, b in zip(self.labels, self.bodies)}
        out = RGFlow(self.shape, self.kernel, self.levels, bodies)
        return out.to(self.to_image.device)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        geo = f"shape={self.shape}, kernel={self.kernel}, levels={self.levels}"
        return f"{base}, {geo}" if base else geo


@lowering("rg")
def lower_rg(args, shape, bodies=None):
    return RGFlow(tuple(shape), args.kernel, RGKind.levels_for(args, shape), bodies)
