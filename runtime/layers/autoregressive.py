"""``autoregressive``: MADE-based masked autoregressive transform, MAF (Papamakarios et al. 2017,
arXiv:1705.07057) or IAF (Kingma et al. 2016, arXiv:1606.04934), affine or spline.

Shapes: x (B, D) -> z (B, D). Entry i is mapped elementwise, z_i = g(x_i; θ_i), where θ_i (P values)
comes from the MADE of ``_made.py`` and depends only on the entries before i in the order:

    direction=forward (MAF)   θ = MADE(x):  forward one parallel pass; inverse D sequential steps
    direction=inverse (IAF)   θ = MADE(z):  forward D sequential steps; inverse one parallel pass

g, per entry, with θ = (shift, r) (affine, P = 2) or the 3K − 1 unnormalised spline parameters:
    affine   z = x·s + shift, log s = r/(1 + |r|/B) ∈ (−B, B), B = LOG_SCALE_BOUND = ln 1000 ≈ 6.91
             (a soft clip: slope 1 at r = 0, s ∈ (1e-3, 1e3));  x = (z − shift)/s;  log g' = log s
    spline   the monotonic rational-quadratic spline of ``_rq_spline.py`` on [−bound, bound] with
             identity tails (Durkan et al. 2019); the same functions as ``coupling(kind=spline)``
log-det = Σ_i log g'(x_i; θ_i): the Jacobian is triangular in the order (dz_i/dx_j = 0 for entries
j after i), so its log-determinant is the sum of the diagonal's logs.

A new layer starts near, not at, the identity: its MADE keeps PyTorch's default (random)
initialisation in every layer, output included (zuko's and nflows' start). With a zero output layer
(θ = 0: the identity) the peers runs (BENCHMARKS.md) lost 0.03–0.3 nats/dim to zuko's MAF.
``inverse_with_log_det`` is one pass: the sequential inverse (MAF) keeps the
log g' of its steps; the parallel inverse (IAF) evaluates g' at the returned x with the θ it used.
With a context (``uses_context``), the MADE also reads the context's embedding (``context_features``
of ``flowdsl.runtime.context``), unmasked, in its first layer.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from flowdsl.compiler.kinds.autoregressive import AutoregressiveKind
from flowdsl.runtime.bijector import Bijector
from flowdsl.runtime.context import ContextValue, EncodedContextInfo, context_features
from flowdsl.runtime.fusion.ops.kernels import InferenceModule, acc_dtype
from flowdsl.runtime.layers._made import MADE, MadeWeights, made_parallel, made_sequential
from flowdsl.runtime.layers._rq_spline import rq_spline_forward, rq_spline_inverse
from flowdsl.runtime.layers.lowering import lowering

__all__ = [
    "Autoregressive",
    "InferenceAutoregressive",
    "ElementMap",
    "ar_forward",
    "ar_inverse",
    "LOG_SCALE_BOUND",
    "soft_log_scale",
]

#: B of the affine log-scale soft clip: log s ∈ (−B, B), so s ∈ (1e-3, 1e3) per layer
LOG_SCALE_BOUND = math.log(1e3)


def soft_log_scale(r: Tensor) -> Tensor:
    """log s = r/(1 + |r|/B), B = ``LOG_SCALE_BOUND``: slope 1 at 0, bounded in (−B, B); shape of ``r``."""
    return r / (1.0 + r.abs() * (1.0 / LOG_SCALE_BOUND))


class ElementMap:
    """The elementwise g of one layer: ``forward(x, θ) -> (z, log g')``, ``inverse(z, θ, need_logdet)
    -> (x, log g'(x) or None)``, on any leading shape (x (...,), θ (..., P))."""

    def __init__(self, kind: str, bins: int, bound: float, log_scale: Callable[[Tensor], Tensor]) -> None:
        self.spline = kind == "spline"
        self.bins, self.bound = bins, bound
        self.log_scale = log_scale

    def forward(self, x: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        if self.spline:
            return rq_spline_forward(x, theta, self.bins, self.bound)
        logs = self.log_scale(theta[..., 1])
        return x * torch.exp(logs) + theta[..., 0], logs

    def inverse(self, z: Tensor, theta: Tensor, need_logdet: bool = True) -> tuple[Tensor, Tensor | None]:
        if self.spline:
            x = rq_spline_inverse(z, theta, self.bins, self.bound)
            return x, (rq_spline_forward(x, theta, self.bins, self.bound)[1] if need_logdet else None)
        logs = self.log_scale(theta[..., 1])
        return (z - theta[..., 0]) * torch.exp(-logs), logs


def _total(ld: Tensor, acc: torch.dtype) -> Tensor:
    return ld.sum(dim=1, dtype=acc)


def ar_forward(
    x: Tensor, w: MadeWeights, plan, g: ElementMap, direction: str, acc: torch.dtype, ctx: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(z, log|det ∂z/∂x|) for x (B, D): one parallel pass (MAF) or D sequential steps (IAF)."""
    if direction == "forward":
        z, ld = g.forward(x, made_parallel(x, w, ctx))
        return z, _total(ld, acc)
    z, logdet = made_sequential(x, w, plan, g.forward, ctx)
    return z, logdet.to(acc)


def ar_inverse(
    z: Tensor,
    w: MadeWeights,
    plan,
    g: ElementMap,
    direction: str,
    acc: torch.dtype,
    ctx: Tensor | None = None,
    need_logdet: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """(x, the forward log-det at x or None) for z (B, D): D sequential steps (MAF) or one parallel
    pass (IAF)."""
    if direction == "forward":
        x, logdet = made_sequential(z, w, plan, lambda v, th: g.inverse(v, th, need_logdet), ctx)
        return x, None if logdet is None else logdet.to(acc)
    x, ld = g.inverse(z, made_parallel(z, w, ctx), need_logdet)
    return x, None if ld is None else _total(ld, acc)


def context_input(context: ContextValue, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """The (B, E) context features a vector layer reads (``flowdsl.runtime.context``), in ``dtype``."""
    return context_features(context, shape).to(dtype)


class Autoregressive(Bijector):
    """The trainable layer (see the module docstring); ``frozen()`` gives ``InferenceAutoregressive``."""

    def __init__(
        self,
        d: int,
        kind: str = "affine",
        hidden: int = 64,
        depth: int = 2,
        order: str = "natural",
        seed: int = 0,
        direction: str = "forward",
        bins: int = 8,
        bound: float = 3.0,
        context: int = 0,
    ) -> None:
        super().__init__()
        self.shape = (d,)
        self.kind, self.direction = kind, direction
        self.bins, self.bound = int(bins), float(bound)
        per_entry = 3 * self.bins - 1 if kind == "spline" else 2
        self.made = MADE(d, hidden, depth, per_entry, order, seed, context)
        self.uses_context = context > 0
        self.g = ElementMap(kind, self.bins, self.bound, soft_log_scale)

    def _ctx(self, context: ContextValue | None, x: Tensor) -> Tensor | None:
        return context_input(context, self.shape, x.dtype) if self.uses_context else None

    def forward(self, x: Tensor, context: ContextValue | None = None) -> tuple[Tensor, Tensor]:
        w = self.made.weights()
        return ar_forward(x, w, self.made.plan, self.g, self.direction, x.dtype, self._ctx(context, x))

    def inverse(self, y: Tensor, context: ContextValue | None = None) -> Tensor:
        w = self.made.weights()
        return ar_inverse(y, w, self.made.plan, self.g, self.direction, y.dtype, self._ctx(context, y))[0]

    def inverse_with_log_det(self, y: Tensor, context: ContextValue | None = None) -> tuple[Tensor, Tensor]:
        w = self.made.weights()
        return ar_inverse(y, w, self.made.plan, self.g, self.direction, y.dtype, self._ctx(context, y), True)

    def _frozen(self) -> Bijector:
        return InferenceAutoregressive(self)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        own = f"d={self.shape[0]}, kind={self.kind}, direction={self.direction}"
        return f"{own}, {base}" if base else own


def _buffer(t: Tensor) -> Tensor:
    return t.detach().clone().contiguous()


class InferenceAutoregressive(InferenceModule):
    """Inference form of ``Autoregressive`` (``frozen()``; the fusion rule ``autoregressive_inference``):
    the masks multiplied into the weights once and stored as buffers (W ⊙ M), the sequential steps'
    weights stored in step order, the affine log-scale the layer's soft clip, the log-det summed in
    float32 for 16-bit inputs. The same scheme functions as the layer, so it equals the layer to rounding.

    With ``label_embedding`` (the model's frozen (K, E) label embedding table; the fusion rule passes
    it for a label context) the first layer's context part is folded: W₁x + W_c·e_k + b₁ =
    W₁x + T[k] with the per-class table T[k] = W_c·e_k + b₁ (K × H, computed once in float64), and
    each example's row T[label] is the first layer's context term (``MadeWeights``: wc None, b₁ 0)."""

    _logdet_buffers = ()

    def __init__(self, src: "Autoregressive", label_embedding: Tensor | None = None) -> None:
        super().__init__()
        self.shape = tuple(src.shape)
        self.kind, self.direction = src.kind, src.direction
        self.bins, self.bound = src.bins, src.bound
        self.uses_context = src.uses_context
        made = src.made
        self.plan = list(made.plan)
        self.per_entry = made.per_entry
        with torch.no_grad():
            w = made.weights()
            self.register_buffer("w1", _buffer(w.w1))
            self.register_buffer("w1_steps", _buffer(w.w1_steps))
            self.register_buffer("wo_steps", _buffer(w.wo_steps))
            self.register_buffer("bo_steps", _buffer(w.bo_steps))
            self.register_buffer("b1", _buffer(w.b1))
            self.register_buffer("wc", None if w.wc is None else _buffer(w.wc))
            for i, (wl, bl) in enumerate(w.hidden):
                self.register_buffer(f"wh{i}", _buffer(wl))
                self.register_buffer(f"bh{i}", _buffer(bl))
            self.n_hidden = len(w.hidden)
            #: affine: θ's rows stored parameter-major (see ``MadeWeights.param_major``): the shift's and
            #: the log-scale's (B, D) slices are contiguous, so the compiled elementwise map vectorises
            #: (entry-major, its loads are strided by P and the exp runs scalar: ~0.5 ms of a 2 ms call
            #: at D = 64, batch 256). The spline reads its 3K − 1 values per entry as rows: entry-major.
            self.param_major = self.kind == "affine"
            wo, bo = w.wo, w.bo
            if self.param_major:
                p = self.per_entry
                wo = wo.reshape(-1, p, wo.shape[1]).transpose(0, 1).reshape(wo.shape)
                bo = bo.reshape(-1, p).t().reshape(bo.shape)
            self.register_buffer("wo", _buffer(wo))
            self.register_buffer("bo", _buffer(bo))
            #: whether the label context is folded into the per-class table ``label_table`` (K, H)
            self.folded = bool(self.uses_context and label_embedding is not None)
            self.register_buffer("label_table", None)
            if self.folded:
                wc, b1 = w.wc.to(torch.float64), w.b1.to(torch.float64)
                table = label_embedding.detach().to(device=wc.device, dtype=torch.float64) @ wc.T + b1
                self.label_table = table.to(w.b1.dtype).contiguous()
                self.b1 = torch.zeros_like(self.b1)
                self.wc = None
                self.classes, self.hidden = int(table.shape[0]), int(table.shape[1])
        self.g = ElementMap(self.kind, self.bins, self.bound, soft_log_scale)

    def _weights(self) -> MadeWeights:
        return MadeWeights(
            w1=self.w1,
            b1=self.b1,
            wc=self.wc,
            hidden=[(getattr(self, f"wh{i}"), getattr(self, f"bh{i}")) for i in range(self.n_hidden)],
            wo=self.wo,
            bo=self.bo,
            per_entry=self.per_entry,
            w1_steps=self.w1_steps,
            wo_steps=self.wo_steps,
            bo_steps=self.bo_steps,
            param_major=self.param_major,
        )

    def _ctx(self, context: ContextValue | None, x: Tensor) -> Tensor | None:
        if self.folded:
            return self.label_table.to(x.dtype).index_select(0, context.raw)  # (B, H): T[label]
        return context_input(context, self.shape, x.dtype) if self.uses_context else None

    def forward(self, x: Tensor, context: ContextValue | None = None) -> tuple[Tensor, Tensor]:
        acc = acc_dtype(x.dtype)
        return ar_forward(x, self._weights(), self.plan, self.g, self.direction, acc, self._ctx(context, x))

    def inverse(self, y: Tensor, context: ContextValue | None = None) -> Tensor:
        acc = acc_dtype(y.dtype)
        return ar_inverse(y, self._weights(), self.plan, self.g, self.direction, acc, self._ctx(context, y))[0]

    def inverse_with_log_det(self, y: Tensor, context: ContextValue | None = None) -> tuple[Tensor, Tensor]:
        acc = acc_dtype(y.dtype)
        return ar_inverse(y, self._weights(), self.plan, self.g, self.direction, acc, self._ctx(context, y), True)


@lowering("autoregressive")
def lower_autoregressive(args, shape, bodies=None, context: EncodedContextInfo | None = None):
    bins, bound = AutoregressiveKind.spline(args)
    width = context.width if context is not None else 0
    return Autoregressive(
        math.prod(shape),
        args.kind,
        args.hidden,
        args.depth,
        args.order,
        args.seed,
        args.direction,
        bins,
        bound,
        width,
    )
