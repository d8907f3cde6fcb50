"""MADE (Germain et al. 2015, arXiv:1502.03509): the masked MLP of ``autoregressive``, and its two
evaluation schemes (one parallel pass; D sequential steps), shared by the layer and its frozen form.

Degrees (the autoregressive order). Input entry i has degree m(i) ∈ {1…D}: ``natural`` m(i) = i + 1,
``reverse`` m(i) = D − i, ``random`` a permutation drawn from ``seed`` (torch.randperm on its own
generator, so a seed gives the same order everywhere). Hidden unit j of every hidden layer has
degree m_h(j) = lo + ⌊j·(hi − lo + 1)/H⌋, a sorted, even spread over {lo…hi} with lo = 1,
hi = max(D − 1, 1) without a context and lo = 0, hi = D − 1 with one (units of degree 0 see only
the context, so that the first entry in the order is conditioned too); :meth:`MADE.set_hidden_degrees`
gives another sorted multiset (e.g. zuko's cyclic one, for the peers benchmark's same-start runs). Masks:

    first   M₁[j, i] = [m_h(j) ≥ m(i)]          (H × D; the context's E columns are unmasked)
    hidden  M[j, j'] = [m_h(j) ≥ m_h(j')]        (H × H)
    output  M_o[i·P + p, j] = [m(i) > m_h(j)]    (D·P × H; the P outputs of entry i, entry-major)

so output i depends only on entries of lower degree: the Jacobian of θ(x) is strictly triangular
in the order, and θ_i can be computed before x_i is known.

Parallel pass (``made_parallel``): θ = W_o·act(…act(W₁x + W_c c + b₁)…) + b_o with the masked
weights, (B, D) -> (B, D, P): no per-entry work.

Sequential steps (``made_sequential``): step k = 1…D solves the entry e_k of degree k. Only the
hidden units of degree < k feed it; the degrees are sorted, so they are the first n_k units of every
layer, and step k costs W₁'s running sum (a rank-1 update per solved entry, B·H) plus the
n_k × n_k blocks of the hidden layers and the P rows of entry e_k in the output layer, instead of a
whole pass. The steps are a static Python unroll (ONNX unrolls them; torch.compile traces them
without graph breaks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "input_degrees",
    "degree_range",
    "hidden_degrees",
    "made_masks",
    "step_plan",
    "MADE",
    "MadeWeights",
    "made_parallel",
    "made_sequential",
    "step_order",
]


def input_degrees(d: int, order: str, seed: int = 0) -> list[int]:
    """Degree m(i) ∈ {1…D} of each input entry (see the module docstring)."""
    if order == "natural":
        return list(range(1, d + 1))
    if order == "reverse":
        return list(range(d, 0, -1))
    perm = torch.randperm(d, generator=torch.Generator().manual_seed(int(seed)))
    return [int(v) + 1 for v in perm]


def degree_range(d: int, conditional: bool) -> tuple[int, int]:
    """(lo, hi): the degrees a hidden unit may have (see the module docstring)."""
    return (0, d - 1) if conditional else (1, max(d - 1, 1))


def hidden_degrees(d: int, hidden: int, conditional: bool) -> list[int]:
    """Sorted degrees of the H units of a hidden layer (see the module docstring)."""
    lo, hi = degree_range(d, conditional)
    span = hi - lo + 1
    return [lo + (j * span) // hidden for j in range(hidden)]


def made_masks(in_deg: list[int], hid_deg: list[int], per_entry: int) -> tuple[Tensor, Tensor, Tensor]:
    """(first H × D, hidden H × H, output D·P × H) masks as float tensors."""
    m_in = torch.tensor(in_deg)
    m_h = torch.tensor(hid_deg)
    first = (m_h[:, None] >= m_in[None, :]).to(torch.get_default_dtype())
    hidden = (m_h[:, None] >= m_h[None, :]).to(torch.get_default_dtype())
    out = (m_in.repeat_interleave(per_entry)[:, None] > m_h[None, :]).to(torch.get_default_dtype())
    return first, hidden, out


def step_plan(in_deg: list[int], hid_deg: list[int]) -> list[tuple[int, int]]:
    """The sequential steps in order: (entry e_k, hidden prefix n_k) for k = 1…D."""
    entry_of = sorted(range(len(in_deg)), key=lambda i: in_deg[i])
    return [(e, sum(1 for m in hid_deg if m < in_deg[e])) for e in entry_of]


@dataclass
class MadeWeights:
    """The masked weights of one MADE as plain tensors (what both schemes read).

    w1 (H, D), b1 (H,), wc (H, E) or None (None with a context: the context the schemes are given is
    already the first layer's context term (B, H), e.g. a row of a folded per-class table),
    hidden [(W (H, H), b (H,))] × (depth − 1),
    wo (D·P, H), bo (D·P,) (entry-major rows: entry i's P outputs together; ``param_major``: the
    D outputs of each parameter together, so a parameter's (B, D) slice of θ is contiguous and the
    elementwise map that reads it vectorises), per_entry P; and, for the sequential steps, the same
    weights in step order: w1_steps (D, H) (row k = W₁'s column of entry e_k), wo_steps (D, P, H)
    and bo_steps (D, P) (the output rows of entry e_k). :meth:`MADE.weights` derives the step-order
    views per call; the frozen form stores them."""

    w1: Tensor
    b1: Tensor
    wc: Tensor | None
    hidden: list[tuple[Tensor, Tensor]]
    wo: Tensor
    bo: Tensor
    per_entry: int
    w1_steps: Tensor
    wo_steps: Tensor
    bo_steps: Tensor
    param_major: bool = False


class MADE(nn.Module):
    """The trainable masked MLP: Linear(D(+E)→H) → ReLU → (depth−1)·(Linear(H→H) → ReLU) →
    Linear(H→D·P), every layer at PyTorch's default (random) initialisation, as zuko's and nflows'
    MADEs (a zero last layer, the identity start, lost 0.03–0.3 nats/dim to zuko in the peers runs).

    Weights are dense ``nn.Linear`` parameters; the masks are buffers applied on every call
    (:meth:`weights`), so masked-out entries get no gradient and never act."""

    def __init__(
        self,
        d: int,
        hidden: int,
        depth: int,
        per_entry: int,
        order: str,
        seed: int,
        context: int = 0,
    ) -> None:
        super().__init__()
        self.d, self.per_entry, self.context = d, per_entry, context
        self.in_deg = input_degrees(d, order, seed)
        self.first = nn.Linear(d, hidden)
        self.ctx = nn.Linear(context, hidden, bias=False) if context > 0 else None
        self.layers = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth - 1)])
        self.out = nn.Linear(hidden, d * per_entry)
        self.set_hidden_degrees(hidden_degrees(d, hidden, context > 0))

    def set_hidden_degrees(self, degrees: list[int]) -> None:
        """Give every hidden layer these H unit degrees (sorted, within {lo…hi} of the module
        docstring) and derive the masks and the step plan from them; the weights are kept. The
        default is :func:`hidden_degrees`' even spread; another multiset, e.g. the cyclic one of
        zuko's and nflows' MADEs, lets a model start from their connectivity (the peers benchmark)."""
        degrees = [int(m) for m in degrees]
        lo, hi = degree_range(self.d, self.context > 0)
        if len(degrees) != self.first.out_features or degrees != sorted(degrees) or not all(
            lo <= m <= hi for m in degrees
        ):
            raise ValueError(f"hidden degrees must be {self.first.out_features} sorted values in {lo}…{hi}")
        self.hid_deg = degrees
        self.plan = step_plan(self.in_deg, degrees)
        first, hid, out = made_masks(self.in_deg, degrees, self.per_entry)
        device = self.first.weight.device
        self.register_buffer("mask_first", first.to(device))
        self.register_buffer("mask_hidden", hid.to(device))
        self.register_buffer("mask_out", out.to(device))
        #: the entries in step order (e_1 … e_D); None for the natural order (no reordering needed)
        steps = [e for e, _ in self.plan]
        entries = None if steps == list(range(self.d)) else torch.tensor(steps, device=device)
        self.register_buffer("step_entries", entries)

    def weights(self) -> MadeWeights:
        """The masked weights (recomputed per call, so autograd sees the masks)."""
        w1 = self.first.weight * self.mask_first.to(self.first.weight.dtype)
        mh = self.mask_hidden.to(w1.dtype)
        wo = self.out.weight * self.mask_out.to(w1.dtype)
        return MadeWeights(
            w1=w1,
            b1=self.first.bias,
            wc=None if self.ctx is None else self.ctx.weight,
            hidden=[(layer.weight * mh, layer.bias) for layer in self.layers],
            wo=wo,
            bo=self.out.bias,
            per_entry=self.per_entry,
            **step_order(w1, wo, self.out.bias, self.per_entry, self.step_entries),
        )


def step_order(w1: Tensor, wo: Tensor, bo: Tensor, per_entry: int, entries: Tensor | None) -> dict[str, Tensor]:
    """``w1_steps``, ``wo_steps``, ``bo_steps`` of :class:`MadeWeights` (``entries``: e_1 … e_D, or
    None for the natural order)."""
    d = w1.shape[1]
    w1_steps, wo_steps, bo_steps = w1.t(), wo.reshape(d, per_entry, -1), bo.reshape(d, per_entry)
    if entries is not None:
        w1_steps, wo_steps, bo_steps = (t.index_select(0, entries) for t in (w1_steps, wo_steps, bo_steps))
    return {"w1_steps": w1_steps, "wo_steps": wo_steps, "bo_steps": bo_steps}


def _context_term(ctx: Tensor, w: MadeWeights) -> Tensor:
    """The first layer's context term (B, H): W_c·c, or ``ctx`` itself when ``w.wc`` is None."""
    return ctx if w.wc is None else F.linear(ctx, w.wc)


def made_parallel(x: Tensor, w: MadeWeights, ctx: Tensor | None = None) -> Tensor:
    """θ(x) for every entry in one pass: x (B, D), ctx (B, E) (or (B, H), see MadeWeights) or None
    -> (B, D, P)."""
    a = F.linear(x, w.w1, w.b1)
    if ctx is not None:
        a = a + _context_term(ctx, w)
    h = torch.relu(a)
    for wl, bl in w.hidden:
        h = torch.relu(F.linear(h, wl, bl))
    out = F.linear(h, w.wo, w.bo)
    if w.param_major:  # (B, P, D) in memory, viewed as (B, D, P)
        return out.reshape(x.shape[0], w.per_entry, -1).transpose(1, 2)
    return out.reshape(x.shape[0], -1, w.per_entry)


#: a step's elementwise map: (the known side's entry (B,), θ (B, P)) -> (the solved entry (B,), log g' (B,) or None)
StepFn = Callable[[Tensor, Tensor], tuple[Tensor, "Tensor | None"]]


def made_sequential(
    v: Tensor, w: MadeWeights, plan: list[tuple[int, int]], step: StepFn, ctx: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Solve the entries one degree at a time: v (B, D) is the side that is given, and entry e_k
    of the other side is ``step(v[:, e_k], θ_k)`` with θ_k computed from the entries solved
    before it. Returns the solved side (B, D) and Σ_k log g'_k (B,) (None if ``step`` gives none).
    """
    batch = v.shape[0]
    a = w.b1.expand(batch, -1)
    if ctx is not None:
        a = a + _context_term(ctx, w)
    cols: list[Tensor | None] = [None] * len(plan)
    logdet: Tensor | None = None
    last = len(plan) - 1
    for k, (e, n) in enumerate(plan):
        if n == 0:
            theta = w.bo_steps[k].expand(batch, w.per_entry)
        else:
            h = torch.relu(a[:, :n])
            for wl, bl in w.hidden:
                h = torch.relu(F.linear(h, wl[:n, :n], bl[:n]))
            theta = F.linear(h, w.wo_steps[k, :, :n], w.bo_steps[k])
        out, ld = step(v[:, e], theta)
        cols[e] = out
        if ld is not None:
            logdet = ld if logdet is None else logdet + ld
        if k < last:
            a = torch.addcmul(a, out.unsqueeze(1), w.w1_steps[k].unsqueeze(0))  # (torch.addr has no ONNX export)
    return torch.stack(cols, dim=1), logdet  # type: ignore[arg-type]
