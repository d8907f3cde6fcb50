"""``prior spike_slab(spike, slab, weight, anneal)``: a continuous spike-and-slab mixture per latent
entry, the spike annealed from the slab's width over ``anneal`` steps; no trainable parameters.
Language side: the argument rules (finite, 0 < spike < slab, 0 < weight < 1, anneal ≥ 0)."""

from __future__ import annotations

import math

from flowdsl.compiler.registry import ArgsModel, PriorKind, register_prior

__all__ = ["SpikeSlabPriorKind"]


@register_prior
class SpikeSlabPriorKind(PriorKind):
    name = "spike_slab"
    description = "continuous spike-and-slab mixture; spike annealed from the slab's width over `anneal` steps"

    class Args(ArgsModel):
        spike: float = 0.01
        slab: float = 1.0
        weight: float = 0.5
        anneal: int = 0

    @classmethod
    def check(cls, args, shape, ctx) -> None:
        for name in ("spike", "slab", "weight"):
            if not math.isfinite(getattr(args, name)):
                ctx.fail(f"spike_slab {name} must be a finite number, got {getattr(args, name)!r}", arg=name)
        if not args.spike > 0:
            ctx.fail(f"spike_slab spike must be > 0 (the spike's standard deviation), got {args.spike:g}", arg="spike")
        if not args.slab > args.spike:
            ctx.fail(
                f"spike_slab slab must be wider than the spike: slab={args.slab:g} is not > spike={args.spike:g}",
                arg="slab",
            )
        if not 0 < args.weight < 1:
            ctx.fail(
                f"spike_slab weight (the slab's share) must be strictly between 0 and 1, got {args.weight:g}",
                arg="weight",
            )
        if args.anneal < 0:
            ctx.fail(f"spike_slab anneal must be ≥ 0 training steps, got {args.anneal}", arg="anneal")
