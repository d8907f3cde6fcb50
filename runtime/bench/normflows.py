"""The normflows side of ``flowdsl bench``: the same Glow architecture built with normflows.

:func:`glow_structure` recognises a flowdsl Glow in a checked graph (squeeze, then steps of
actnorm, 1×1 conv (LU) and affine channel coupling with the conv net of depth 2, with splits
between the scales) and returns its scales; :func:`normflows_glow` builds the normflows
``MultiscaleFlow`` with the same scales, widths and hidden sizes, so both libraries are timed on
the same architecture.
"""

from __future__ import annotations

__all__ = ["glow_structure", "normflows_glow"]


def glow_structure(graph) -> list[dict] | None:
    """Scales of a multi-scale Glow (squeeze, K × (actnorm, conv1x1(lu), affine channel
    coupling with the conv net, depth 2), split) in x → z order, or None for other specs."""
    nodes = [graph.node(n) for n in graph.chain]
    scales: list[dict] = []
    i = 0
    while i < len(nodes):
        if nodes[i].kind != "squeeze" or nodes[i].args.factor != 2:
            return None
        shape = nodes[i].out_shape
        i += 1
        k, hidden = 0, None
        while i + 2 < len(nodes) + 0 and [n.kind for n in nodes[i : i + 3]] == ["actnorm", "conv1x1", "coupling"]:
            a = nodes[i + 2].args
            if (
                nodes[i + 1].args.param != "lu"
                or a.kind != "affine"
                or a.mask != "channel"
                or (a.net or "conv") != "conv"
                or a.depth != 2
            ):
                return None
            if hidden not in (None, a.hidden):
                return None
            hidden = a.hidden
            k += 1
            i += 3
        split = i < len(nodes) and nodes[i].kind == "split"
        i += split
        if k == 0 or shape[0] % 2:
            return None
        scales.append({"shape": tuple(shape), "steps": k, "hidden": hidden, "split": split})
    if not scales or any(not s["split"] for s in scales[:-1]) or scales[-1]["split"]:
        return None
    return scales


def normflows_glow(scales: list[dict]):
    """The same multi-scale Glow in normflows (``MultiscaleFlow`` of ``GlowBlock``s)."""
    import normflows as nf  # benchmark-only dependency

    q0, flows, merges = [], [], []
    for i, s in enumerate(reversed(scales)):  # normflows level 0 is the deepest scale
        c, h, w = s["shape"]
        flows.append(
            [nf.flows.GlowBlock(c, s["hidden"], split_mode="channel", scale=True, leaky=0.0) for _ in range(s["steps"])]
            + [nf.flows.Squeeze()]
        )
        if i == 0:
            q0.append(nf.distributions.DiagGaussian((c, h, w)))
        else:
            merges.append(nf.flows.Merge())
            q0.append(nf.distributions.DiagGaussian((c // 2, h, w)))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
