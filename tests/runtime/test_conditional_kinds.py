"""Issue #16 acceptance, every layer kind with every context kind (float64, randomised parameters).

The snippets come from the kind registry (``tests/kindspecs.py``: every kind, its defaults and its
enumeration values, on a (2, 4, 4) image and a (4,) vector), so a new kind is covered without
touching this file. Each snippet becomes a conditional flow

    input ...
    context label(classes=3) | vector(dim=2) | image(channels=1, height=2, width=2)
    <the layer>
    prior gaussian(learned=true, conditional=true)

(the image context only on image inputs; it divides the 4×4 input, so conditioners see it
resized). Kinds that take the context (an ``Args.context`` field: coupling, and the layers inside
``rg``'s bodies) read it, the others pass it through; the conditional prior reads it always, so
every file uses its context. The default call of a kind runs with every context kind; each other
enumeration value with one of them, in rotation (tiny and fast).

For each flow and a batch of contexts c:
    * round trip ``model.inverse(model(x, c), c)`` ≤ 1e-10 and the log-det against log|det| of the
      autograd Jacobian of x ↦ z (per example, its own context) ≤ 1e-10;
    * ``model.fuse()`` equals the model (z, log-det, inverse, log_prob) ≤ 1e-12;
    * ``sample(n, context=c, return_log_prob=True)`` returns (x, log p) with log p =
      ``log_prob(x, c)`` ≤ 1e-10, for the model and the fused model; ``inverse_with_log_prob(z, c)``
      agrees with ``inverse`` and ``log_prob``;
    * the context matters: another context gives another log_prob.
All errors are relative to max(1, |reference|).
"""

from __future__ import annotations

import math

import kindspecs
import pytest
import torch
from flowtest import jacobian

import flowdsl
from flowdsl.compiler.kinds import layer_kinds
from flowdsl.runtime.training.demo import randomize_parameters

CONTEXTS = {
    "label": "context label(classes=3)",
    "vector": "context vector(dim=2)",
    "image": "context image(channels=1, height=2, width=2)",
}
PRIOR = "prior gaussian(learned=true, conditional=true)"
BATCH = 3


def context_kinds(case: kindspecs.LayerCase) -> list[str]:
    return ["label", "vector", "image"] if case.is_image else ["label", "vector"]


def _cases() -> list[tuple[kindspecs.LayerCase, str]]:
    out = []
    seen_default: set[tuple[str, int]] = set()
    turn = 0
    for case in kindspecs.layer_cases():
        key = (case.kind, len(case.shape))
        kinds = context_kinds(case)
        if key not in seen_default:  # the kind's first (default) call on this input: every context
            seen_default.add(key)
            out += [(case, ck) for ck in kinds]
        else:  # other enumeration values: one context each, in rotation
            out.append((case, kinds[turn % len(kinds)]))
            turn += 1
    return out


CASES = _cases()


def make_context(kind: str, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "label":
        return torch.randint(0, 3, (n,), generator=gen)
    if kind == "vector":
        return torch.randn(n, 2, dtype=torch.float64, generator=gen)
    return torch.randn(n, 1, 2, 2, dtype=torch.float64, generator=gen)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1.0))


def build(case: kindspecs.LayerCase, ctx_kind: str):
    text = kindspecs.spec_text(case, context=CONTEXTS[ctx_kind], prior=PRIOR)
    model = flowdsl.compile(flowdsl.parse(text), seed=0).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, *model.input_shape, dtype=torch.float64, generator=gen) * 0.8 + 0.1  # logit's domain too
    c = make_context(ctx_kind, BATCH, seed=1)
    model.train()
    with torch.no_grad():
        model(x, context=c)  # data-dependent initialisation
    randomize_parameters(model, seed=2)
    return model.eval(), x, c


def test_every_kind_has_every_context_kind():
    want = {(c.kind, ck) for c in kindspecs.layer_cases() for ck in context_kinds(c)}
    assert {(c.kind, ck) for c, ck in CASES} == want


@pytest.mark.parametrize("case,ctx_kind", CASES, ids=[f"{c.id}|{k}" for c, k in CASES])
def test_conditional_kind(case, ctx_kind):
    model, x, c = build(case, ctx_kind)
    assert model.context_kind == ctx_kind
    readers = {model.graph.node(nid).kind for nid in model.graph.context_nodes}
    if "context" in layer_kinds()[case.kind].Args.model_fields:  # a kind that takes the context reads it
        assert case.kind in readers, f"{case.kind} does not read the context (context_nodes: {readers})"
    shape = tuple(model.input_shape)
    n = math.prod(shape)

    # round trip and log-det against the autograd Jacobian, each example with its own context
    with torch.no_grad():
        z, ld = model(x, context=c)
        x_back = model.inverse(z, context=c)
    assert rel(x_back, x) <= 1e-10, f"round trip {rel(x_back, x):.2e}"
    for i in range(2):
        ci = c[i : i + 1]
        jac = jacobian(lambda v: model(v.reshape(1, *shape), context=ci)[0].reshape(-1), x[i].reshape(-1).clone())
        ref = torch.linalg.slogdet(jac.reshape(n, n))[1]
        err = float((ld[i] - ref).abs() / ref.abs().clamp_min(1.0))
        assert err <= 1e-10, f"log-det vs autograd Jacobian {err:.2e}"

    # the context is used: another context changes the density
    with torch.no_grad():
        lp = model.log_prob(x, context=c)
        other = make_context(ctx_kind, BATCH, seed=7)
        if ctx_kind == "label":
            other = (c + 1) % 3
        assert rel(model.log_prob(x, context=other), lp) > 1e-6, "log_prob does not depend on the context"

    # fused equals unfused
    fused = model.fuse()
    with torch.no_grad():
        zf, ldf = fused(x, context=c)
        assert rel(zf, z) <= 1e-12, f"fused z {rel(zf, z):.2e}"
        assert rel(ldf, ld) <= 1e-12, f"fused log-det {rel(ldf, ld):.2e}"
        assert rel(fused.inverse(z, context=c), x_back) <= 1e-12
        assert rel(fused.log_prob(x, context=c), lp) <= 1e-12

    # one inverse pass scores the samples: log p = log_prob(x) at the returned x
    for m in (model, fused):
        with torch.no_grad():
            xs, lps = m.sample(BATCH, context=c, return_log_prob=True)
            assert xs.shape == (BATCH, *shape) and lps.shape == (BATCH,)
            ref = m.log_prob(xs, context=c)
            assert rel(lps, ref) <= 1e-10, f"{type(m).__name__}: sample log p vs log_prob {rel(lps, ref):.2e}"
            xi, lpi = m.inverse_with_log_prob(z, context=c)
            assert rel(xi, x_back) <= 1e-12
            assert rel(lpi, lp) <= 1e-10, f"{type(m).__name__}: inverse_with_log_prob {rel(lpi, lp):.2e}"
