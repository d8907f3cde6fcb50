"""``conv(kind=emerging|periodic, kernel=k)``: invertible k×k convolutions, language side.

Shapes: (C, H, W) -> unchanged (images only). Parameters: ``emerging`` two masked one-sided
convolutions of ((k+1)/2)² taps (2·C²·((k+1)/2)²), their log-diagonals (2·C) and a bias (C);
``periodic`` one C×C×k×k kernel.

The runtime's inverse is planned when the layer is built, and the plan's memory grows with C²
(periodic: a C×C complex inverse per frequency; emerging: dense tile matrices and index maps of
the tiled wavefront solve). :func:`plan_bytes` estimates that memory from the shape alone and the
check refuses a layer above ``LIMITS.max_plan_bytes`` — the estimate is reported, nothing is
allocated (a 2,048-channel emerging conv once took 8 GB while being planned).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowdsl.compiler.limits import LIMITS
from flowdsl.compiler.registry import ArgsModel, LayerKind, register_layer
from flowdsl.wording import plural

__all__ = ["ConvKind", "plan_bytes"]


def _emerging_tile(c: int, h: int, w: int, k: int) -> tuple[int, int]:
    """The tile the runtime's solver picks, approximately: the largest power-of-two square with
    C·T² ≤ 4,096 (clipped to H, W); the whole image when even 1×1 is larger (C > 4,096)."""
    if k == 1:
        return 1, 1
    if c > 4096:
        return h, w
    t = 1
    while c * (2 * t) ** 2 <= 4096 and 2 * t <= max(h, w):
        t *= 2
    return min(t, h), min(t, w)


def plan_bytes(kind: str, c: int, h: int, w: int, k: int) -> int:
    """Estimated peak bytes of planning the inverse of ``conv(kind, kernel=k)`` on C×H×W.

    periodic: K̂ and K̂⁻¹ on the rfft grid, H·(W/2+1)·C² complex128 each, and the inverse's workspace.
    emerging, one masked half (planned one after the other; q = (k+1)/2 taps a side, c' = q−1, tile Th×Tw, N = C·Th·Tw
    unknowns per tile, m = ⌈c'/min(Th, Tw)⌉ tiles of reach, P = 2m+1, K ≈ C·((Th+c')(Tw+c') − Th·Tw)
    coupled boundary unknowns): the K basis images pushed through the conv, K·C·(P·Th+c')(P·Tw+c')
    float64 (and their padded copy); the N identity images, N·C·(Th+c')(Tw+c') float64 (twice);
    the dense maps and operators, 3·N² + 2·N·K eight-byte entries.
    """
    if kind == "periodic":
        return 3 * h * (w // 2 + 1) * c * c * 16
    q = (k + 1) // 2
    cp = q - 1
    th, tw = _emerging_tile(c, h, w, k)
    n = c * th * tw
    m = -(-cp // min(th, tw)) if cp > 0 else 0
    p = 2 * m + 1
    kk = c * ((th + cp) * (tw + cp) - th * tw) if m else 0
    basis = 2 * kk * c * (p * th + cp) * (p * tw + cp) * 8
    eye = 2 * n * c * (th + cp) * (tw + cp) * 8
    dense = (3 * n * n + 2 * n * kk) * 8
    return basis + eye + dense


@register_layer
class ConvKind(LayerKind):
    name = "conv"
    description = (
        "invertible k×k convolution: emerging (two masked AR convs) or periodic (circular, Fourier-invertible)"
    )
    spatial = True
    constant_logdet = True

    class Args(ArgsModel):
        kind: Literal["emerging", "periodic"] = "emerging"
        kernel: int = Field(3, ge=1)

    @classmethod
    def infer_shape(cls, args, shape, ctx):
        shape = tuple(shape)
        if len(shape) != 3:
            ctx.fail(
                f"conv(kind={args.kind}) needs an image input (C, H, W); this input is a vector of "
                f"{plural(shape[0], 'entry')}"
            )
        c, h, w = shape
        k = args.kernel
        if k < 1:
            ctx.fail(f"conv kernel must be a positive integer, got {k}", arg="kernel")
        if args.kind == "emerging" and k % 2 == 0:
            ctx.fail(
                f"conv(kind=emerging) needs an odd kernel (its two masked halves share the centre tap), "
                f"got {k}; use {k - 1} or {k + 1} — or kind=periodic, which takes even kernels",
                arg="kernel",
            )
        if args.kind == "periodic" and (k > h or k > w):
            # a circular kernel wider than the image would wrap onto itself (aliased taps)
            side, size = ("height", h) if k > h else ("width", w)
            ctx.fail(
                f"conv(kind=periodic) kernel {k} does not fit in the image: {side} is {size} "
                f"(input {c}×{h}×{w}); a periodic kernel must be at most {min(h, w)}",
                arg="kernel",
            )
        reach = (k + 1) // 2  # each masked AR conv is a one-sided ((k+1)/2)² conv
        if args.kind == "emerging" and (reach > h or reach > w):
            side, size = ("height", h) if reach > h else ("width", w)
            ctx.fail(
                f"conv(kind=emerging) kernel {k} does not fit in the image: its masked halves reach "
                f"{reach} pixels but the {side} is {size} (input {c}×{h}×{w}); use a kernel of at most "
                f"{2 * min(h, w) - 1}",
                arg="kernel",
            )
        need = plan_bytes(args.kind, c, h, w, k)
        if need > LIMITS.max_plan_bytes:
            ctx.fail(
                f"planning the inverse of conv(kind={args.kind}, kernel={k}) on {c}×{h}×{w} needs about "
                f"{need / 1024**3:.1f} GiB, above the limit of {LIMITS.max_plan_bytes / 1024**3:.1f} GiB "
                "(FLOWDSL_MAX_PLAN_BYTES); use fewer channels (its memory grows with their square)"
            )
        return shape

    @classmethod
    def param_count(cls, args, shape) -> int:
        c, k = shape[0], args.kernel
        if args.kind == "emerging":
            half = (k + 1) // 2
            return 2 * c * c * half * half + 3 * c
        return c * c * k * k
