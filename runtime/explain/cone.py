"""Incremental generation for inpainting: G restricted to a hole's causal cone, in O(log L) patches.

    ConeGenerator(model, mask, context)    for a model whose only position-mixing layer is one ``rg``
        .gather(z)                         z (B, C, H, W) -> z_F (B, C, n_F), the free latents
        .scatter(z, z_F)                   z with the free latents replaced (the full layout)
        .generate(z_F, z)                  x_W (B, C, n_W): G on the window pixels, from z_F and
                                           O(log L) cached entries of z
        .window(x)                         x (…, C, H, W) -> x_W (…, C, n_W)
        .log_prior(z_F, z)                 log p_Z over the free latents (up to a constant)
        .patches_per_step                  patch evaluations of one ``generate``

Sets (all periodic, like the ``rg`` lattice):

    hole  M          the missing pixels
    free  F          the latents whose generation cone meets M (``touched_latents``)
    region R         M dilated by ``context`` pixels (Chebyshev): M plus known pixels around it
    cone of R        per rg layer, the patches that can influence a pixel of R, and the latents
                     T_R ⊇ F that feed them (:mod:`flowdsl.runtime.layers._rg_cone`)
    window W ⊇ R     every pixel of the finest cone patches

Math. The pointwise steps (actnorm, conv1x1, permute: they mix channels at one position) commute
with restricting to a set of positions, and the cone is closed: the window pixels depend only on
the latents T_R. ``generate`` builds z_{T_R} from the cached z (entries outside F) and z_F, and runs
only the cone patches, so for every z

    generate(gather(z), z) = G(z)[:, :, W]             (exactly; the same operations per patch)

and gradients reach z_F only. For a hole and context of fixed size n_F, |T_R|, n_W and the patch
count grow as O(log L) (one more RG level per doubling of L).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowdsl.runtime.layers.rg import RGFlow
from flowdsl.runtime.priors.gaussian import GaussianPrior
from flowdsl.runtime.priors.laplace import LaplacePrior

__all__ = ["POINTWISE_STEPS", "only_rg_mixes_positions", "dilate", "ConeGenerator"]

#: step classes that act on each position separately (they do not widen a causal cone)
POINTWISE_STEPS = {"ActNorm", "Conv1x1", "Permute", "FrozenConv1x1", "FrozenActNorm", "ChannelAffine", "ChannelLinear"}


def only_rg_mixes_positions(model: nn.Module) -> RGFlow | None:
    """The model's ``rg`` step when it is the only step that mixes positions, else None."""
    steps = getattr(model, "steps", None)
    if steps is None:
        return None
    rgs = [s for s in steps if isinstance(s, RGFlow)]
    if len(rgs) != 1:
        return None
    if all(isinstance(s, RGFlow) or type(s).__name__ in POINTWISE_STEPS for s in steps):
        return rgs[0]
    return None


def dilate(mask: Tensor, r: int) -> Tensor:
    """Bool (H, W): ``mask`` dilated by r pixels in the max-norm, with wrap-around (a torus)."""
    out = mask.to(torch.bool)
    for dim in (0, 1):
        acc = out
        for d in range(1, min(r, out.shape[dim]) + 1):  # 2r rolls: r is a small context width
            acc = acc | torch.roll(out, d, dim) | torch.roll(out, -d, dim)
        out = acc
    return out


class ConeGenerator:
    """G restricted to the causal cone of the hole plus ``context`` (see the module docstring).

    Args:
        model: a compiled flow whose steps are one ``rg`` and pointwise steps (else ValueError).
        mask: (H, W) or (C, H, W) bool, True = missing pixel (any channel marks the pixel).
        context: width in pixels of the known ring around the hole whose pixels the window must
            contain (default: the rg kernel K).
    """

    def __init__(self, model: nn.Module, mask: Tensor, context: int | None = None) -> None:
        rg = only_rg_mixes_positions(model)
        if rg is None or not getattr(model, "identity_layout", False):
            raise ValueError("incremental generation needs one rg layer and otherwise pointwise steps")
        m = mask.to(torch.bool).cpu()
        m = m.any(0) if m.dim() == 3 else m
        if not bool(m.any()):
            raise ValueError("the mask marks no pixel")
        steps = list(model.steps)
        i = next(k for k, s in enumerate(steps) if s is rg)
        self.model, self.rg = model, rg
        self.pre, self.post = steps[:i], steps[i + 1 :]
        C, L, _ = rg.shape
        self.C, self.L = C, L
        self.context = rg.kernel if context is None else int(context)
        self.region = dilate(m, self.context)  # (L, L) bool
        self.cone = rg.cone(self.region)
        dev = self.cone.latents.device
        free = rg.dependency_mask(m)[0].reshape(-1)  # (L²,) bool: the hole's touched latents
        #: (n_F,) pixel indices of the free latents
        self.latents = torch.nonzero(free).view(-1).to(dev)
        #: (n_T,) pixel indices of every latent the window depends on (⊇ the free ones)
        self.cone_latents = self.cone.latents
        rank = torch.full((L * L,), -1, dtype=torch.long)
        rank[self.cone_latents.cpu()] = torch.arange(self.cone_latents.numel())
        self._free_in_cone = rank[self.latents.cpu()].to(dev)
        assert bool((self._free_in_cone >= 0).all()), "a free latent outside the region's cone"
        #: (n_W,) pixel indices of the window
        self.pixels = self.cone.pixels
        self.patches_per_step = sum(self.cone.patches)
        prior = model.prior
        self._prior = None
        with torch.no_grad():  # the prior's parameters at the free entries (fixed while inpainting)
            if isinstance(prior, LaplacePrior):
                self._prior = ("laplace", self.gather(prior.loc[None])[0], self.gather(prior.log_b[None])[0])
            elif isinstance(prior, GaussianPrior):
                self._prior = ("gaussian", self.gather(prior.loc[None])[0], self.gather(prior.log_scale[None])[0])

    # -- latents ----------------------------------------------------------------------------
    def gather(self, z: Tensor) -> Tensor:
        """z (B, C, L, L) -> z_F (B, C, n_F)."""
        return z.reshape(z.shape[0], self.C, -1).index_select(2, self.latents)

    def scatter(self, z: Tensor, zf: Tensor) -> Tensor:
        """z (B, C, L, L) with the free latents replaced by z_F (B, C, n_F) (out of place)."""
        flat = z.reshape(z.shape[0], self.C, -1).index_copy(2, self.latents, zf.to(z.dtype))
        return flat.reshape(z.shape)

    def window(self, x: Tensor) -> Tensor:
        """x (…, C, L, L) -> its window pixels (…, C, n_W)."""
        return x.reshape(*x.shape[:-2], -1).index_select(-1, self.pixels)

    # -- generation ---------------------------------------------------------------------------
    def generate(self, zf: Tensor, z: Tensor) -> Tensor:
        """z_F (B, C, n_F) and cached z (B, C, L, L) -> G(scatter(z, z_F))[:, :, W] (B, C, n_W).

        Reads O(|T_R|) entries of z; post steps⁻¹, the rg cone⁻¹, pre steps⁻¹ on the cone only.
        """
        B = zf.shape[0]
        zt = z.reshape(z.shape[0], self.C, -1).index_select(2, self.cone_latents).to(zf.dtype)
        zt = zt.expand(B, -1, -1).index_copy(2, self._free_in_cone, zf)
        h = zt.unsqueeze(-1)  # (B, C, n_T, 1): an "image" one pixel wide for the pointwise steps
        for step in reversed(self.post):
            h = step.inverse(h)
        out = self.rg.cone_inverse(h.reshape(B, -1), self.cone)
        h = out.reshape(B, self.C, -1, 1)
        for step in reversed(self.pre):
            h = step.inverse(h)
        return h.squeeze(-1)

    def log_prior(self, zf: Tensor, z: Tensor) -> Tensor:
        """(B,) log p_Z(scatter(z, z_F)), up to a constant in z_F.

        Factorised priors with per-entry parameters (Laplace, Gaussian) use only the free entries
        (O(n_F)); any other prior is evaluated on the whole scattered z.
        """
        B = zf.shape[0]
        if self._prior is None:
            return self.model.prior.log_prob(self.scatter(z, zf))
        kind, loc, log_s = self._prior
        u = (zf - loc.to(zf.dtype)) * torch.exp(-log_s.to(zf.dtype))
        lp = -torch.abs(u) if kind == "laplace" else -0.5 * u * u
        return lp.reshape(B, -1).sum(1)
