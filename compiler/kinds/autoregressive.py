"""``autoregressive(kind=affine|spline, hidden=64, depth=2, order=natural|reverse|random, seed=0,
direction=forward|inverse, bins, bound, context)``: a MADE-based masked autoregressive transform
(MAF, Papamakarios et al. 2017, arXiv:1705.07057; IAF, Kingma et al. 2016, arXiv:1606.04934),
language side. Vectors only.

Each entry i is transformed elementwise, z_i = g(x_i; θ_i), with θ_i from a masked MLP (MADE,
Germain et al. 2015, arXiv:1502.03509) that sees only the entries before i in the chosen order:
``direction=forward`` (MAF) reads x (density in one parallel pass, inverse in D sequential
passes); ``direction=inverse`` (IAF) reads z (sampling in one pass, density in D passes). g is an
affine map z = x·s + t with a soft-clipped log-scale, log s = r/(1 + |r|/ln 1000) ∈ (−ln 1000, ln 1000)
(zuko's MAF bound; wider than coupling's 2·tanh(r/2)), its MADE output layer starting random, or
the rational-quadratic spline of ``coupling(kind=spline)``; ``bins`` (≥ 2, default 8) and
``bound`` (> 0, default 3.0) belong to ``kind=spline`` only and are rejected at their location on ``kind=affine``.

``context`` (default: whether the file declares a context; resolved to a bool by the compiler):
MADE also reads the context's embedding (E = CONTEXT_EMBED features, image embeddings
average-pooled), unmasked, in its first layer, and hidden units of degree 0 see only the
context, so every entry, the first in the order too, is conditioned
(:mod:`flowdsl.compiler.context`).

The D sequential passes are bounded by ``LIMITS.max_sequential_passes``
(``FLOWDSL_MAX_SEQUENTIAL_PASSES``): a vector longer than that is rejected at the layer.

Shapes: (D,) -> (D,); an image is rejected at the layer (flatten is not a layer: use vector data).
Parameters (dense masked weights; the masked-out entries stay zero in effect), with P = 2
(affine) or 3K − 1 (spline of K bins) outputs per entry and E the context embedding width
(0 without a context):

    Linear (D→h) + (depth−1)·Linear (h→h) + Linear (h→D·P), with biases;  + E·h (no bias) with a context
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from flowdsl.compiler.context import CONTEXT_EMBED
from flowdsl.compiler.kinds.coupling import SPLINE_DEFAULTS, reject_spline_only_args, spline_args
from flowdsl.compiler.limits import LIMITS
from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer

__all__ = ["AutoregressiveKind", "made_param_count", "AR_SPLINE_DEFAULTS"]

AR_SPLINE_DEFAULTS = SPLINE_DEFAULTS  # the same defaults as coupling(kind=spline)


def made_param_count(d: int, hidden: int, depth: int, per_entry: int, context: int = 0) -> int:
    """Parameters of one MADE: D inputs (+ ``context`` unmasked ones), ``depth`` hidden layers of
    ``hidden`` units, ``per_entry`` outputs per input entry."""
    first = (d + context) * hidden + hidden
    middle = (depth - 1) * (hidden * hidden + hidden)
    last = hidden * d * per_entry + d * per_entry
    return first + middle + last


@register_layer
class AutoregressiveKind(LayerKind):
    name = "autoregressive"
    description = "MADE-based masked autoregressive transform (MAF / IAF), affine or rational-quadratic spline"

    class Args(ArgsModel):
        kind: Literal["affine", "spline"] = "affine"
        hidden: int = Field(default=64, ge=1, le=2**31)
        depth: int = Field(default=2, ge=1, le=64)
        order: Literal["natural", "reverse", "random"] = "natural"
        seed: int = Field(default=0, ge=0, le=2**63 - 1)
        direction: Literal["forward", "inverse"] = "forward"
        bins: Optional[int] = Field(default=None, ge=2, le=512)  # None: 8 for kind=spline
        bound: Optional[float] = Field(default=None, gt=0.0, le=1e6, allow_inf_nan=False)  # None: 3.0
        context: Optional[bool] = None  # None until checked: "the file declares a context"

    @staticmethod
    def spline(args) -> tuple[int, float]:
        """(bins, bound) of a ``kind=spline`` layer, defaults filled in."""
        return spline_args(args)

    @classmethod
    def per_entry(cls, args) -> int:
        """Conditioner outputs per entry: 2 (affine: shift, log-scale), 3K − 1 (spline)."""
        return 3 * cls.spline(args)[0] - 1 if args.kind == "spline" else 2

    @classmethod
    def shown_args(cls, args, shape) -> dict:
        shown = args.model_dump()
        if args.kind == "spline":
            shown["bins"], shown["bound"] = cls.spline(args)
        else:
            shown.pop("bins"), shown.pop("bound")
        shown["context"] = shown.pop("context")  # last, as coupling shows it
        return shown

    @classmethod
    def infer_shape(cls, args, shape, ctx):
        reject_spline_only_args(args, ctx)
        if len(shape) != 1:
            dims = "×".join(str(s) for s in shape)
            ctx.fail(
                f"needs vector input, got an image of shape {dims}; use coupling (or conv(kind=emerging)) on images"
            )
        d = shape[0]
        limit = LIMITS.max_sequential_passes
        if d > limit:
            slow = "inverse (sampling)" if args.direction == "forward" else "forward (density)"
            ctx.fail(
                f"{d:,} entries take {d:,} sequential passes in the {slow} direction, "
                f"above the limit of {limit:,} (FLOWDSL_MAX_SEQUENTIAL_PASSES)"
            )
        return shape

    @classmethod
    def param_count(cls, args, shape) -> int:
        extra = CONTEXT_EMBED if args.context else 0
        return made_param_count(shape[0], args.hidden, args.depth, cls.per_entry(args), extra)

    @classmethod
    def activation_numel(cls, args, shape) -> int:
        """One parallel pass keeps the input, each hidden layer (pre- and post-activation), the
        D·P outputs and, for a spline, about as many intermediates again. The sequential
        direction (the forward pass of ``direction=inverse``, which training differentiates)
        keeps each of its D steps: D times a pass's hidden units plus the per-entry outputs."""
        d, p = shape[0], cls.per_entry(args)
        hidden = 2 * args.hidden * args.depth
        outputs = d * p * (2 if args.kind == "spline" else 1)
        if args.direction == "forward":
            return 2 * d + hidden + outputs
        return 2 * d + d * (hidden + 2 * p) + outputs
