"""``inverse_with_log_det`` of every registered layer kind: one pass, and exact (issue #16).

For every snippet that ``tests/kindspecs.py`` generates from the kind registry (so a new kind is
covered without touching this file), the model is compiled in float64 with randomised
parameters, and every layer module is checked in three forms: the training module, its
``frozen()`` form and what ``model.fuse()`` emits (merged channel maps, position gathers,
``ConstantLogdet`` wrappers, ...):

* it overrides :meth:`Bijector.inverse_with_log_det` (not the two-pass base fallback), and so do
  all the bijectors inside it, and running it calls no bijector's ``forward`` (one pass);
* ``inverse_with_log_det(y)`` returns x with x = ``inverse(y)`` (≤ 1e-12, relative to max(1, |x|))
  and the forward log-det at x: = ``forward(x)[1]`` (≤ 1e-12) and = log|det| of the autograd
  Jacobian of ``forward`` at x (≤ 1e-10);
* under a 16-bit cast of the fused model, its log-det has the dtype ``forward`` returns (float32:
  fused forms accumulate log-dets in float32) and the same value (bit for bit for kinds with a
  constant log-det; to 16-bit rounding otherwise).

``PENDING`` lists, in one place, the kinds whose one-pass override belongs to another lane and is
not on this branch yet; their modules are still checked numerically (through the fallback).
``test_pending_list_is_current`` fails as soon as a listed kind has its overrides: then the entry
must go.
"""

from __future__ import annotations

import copy
import functools
import math

import kindspecs
import pytest
import torch
from flowtest import jacobian

import flowdsl
from flowdsl.compiler.kinds import layer_kinds
from flowdsl.runtime.bijector import Bijector
from flowdsl.runtime.layers import lowered_kinds
from flowdsl.runtime.training.demo import randomize_parameters

#: kinds whose one-pass ``inverse_with_log_det`` is written by another lane (kind -> lane)
PENDING: dict[str, str] = {}

CASES = kindspecs.layer_cases()
DOUBLE_TAIL = "actnorm"  # after the layer written twice: position moves are then composed, not absorbed


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1.0))


@functools.lru_cache(maxsize=None)
def build(text: str, batch: int = 3):
    """Float64 model with data-dependent init and randomised parameters, and x in [0.1, 0.9]
    (inside the domain of every kind, also ``logit``'s). Cached: the tests never change it."""
    model = flowdsl.compile(flowdsl.parse(text), seed=0).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *model.input_shape, dtype=torch.float64, generator=gen) * 0.8 + 0.1
    model.train()
    with torch.no_grad():
        model(x)
    randomize_parameters(model, seed=1)
    return model.eval(), x


@functools.lru_cache(maxsize=None)
def fused_of(text: str):
    return build(text)[0].fuse()


def step_inputs(steps, x: torch.Tensor) -> list[tuple[Bijector, torch.Tensor]]:
    """(step, its input) for every non-factor-out step of a chain run on x."""
    out = []
    h = x
    with torch.no_grad():
        for step in steps:
            if step.factor_out:
                h, _ = step.split(h)
                continue
            out.append((step, h))
            h = step(h)[0]
    return out


@functools.lru_cache(maxsize=None)
def forms(case: kindspecs.LayerCase):
    """[(form name, module, its input)] for the case: training modules, frozen(), fused steps
    (of the snippet, and of the layer written twice then ``actnorm`` when that checks)."""
    model, x = build(kindspecs.spec_text(case))
    pairs = step_inputs(model.steps, x)
    out = [("module", m, h) for m, h in pairs]
    with torch.no_grad():
        out += [("frozen", m.frozen().eval(), h) for m, h in pairs]
    out += [("fused", m, h) for m, h in step_inputs(fused_of(kindspecs.spec_text(case)).steps, x)]
    twice = kindspecs.LayerCase(case.kind, f"{case.layer}\n  {case.layer}\n  {DOUBLE_TAIL}", case.shape)
    try:
        model2, x2 = build(kindspecs.spec_text(twice))
    except flowdsl.FlowDSLError:
        model2 = None
    if model2 is not None:
        with torch.no_grad():
            finite = bool(torch.isfinite(model2(x2)[1]).all())  # a layer twice may leave its domain (logit)
        if finite:
            out += [("fused-twice", m, h) for m, h in step_inputs(model2.fuse().steps, x2)]
    return model, tuple(out)


def kind_of(model, module: torch.nn.Module, default: str) -> str:
    node_id = module.provenance.node_id if isinstance(module, Bijector) else ""
    for nid in node_id.split("+"):
        try:
            return model.graph.node(nid).kind
        except Exception:
            continue
    return default


def overrides(module: torch.nn.Module) -> bool:
    return type(module).inverse_with_log_det is not Bijector.inverse_with_log_det


def bijectors(module: torch.nn.Module) -> list[Bijector]:
    return [m for m in module.modules() if isinstance(m, Bijector) and not m.factor_out]


def count_forward_calls(module: torch.nn.Module, fn):
    """Run fn() and count the calls of any bijector's forward inside ``module``."""
    calls: list[str] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, _n=type(m).__name__: calls.append(_n)) for m in bijectors(module)
    ]
    try:
        out = fn()
    finally:
        for h in hooks:
            h.remove()
    return out, calls


def test_every_registered_kind_is_covered():
    kinds = set(layer_kinds())
    assert set(lowered_kinds()) <= kinds, "a lowering without a compiler kind"
    covered = {c.kind for c in CASES}
    assert covered == kinds, f"kinds without a generated snippet: {sorted(kinds - covered)}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_inverse_with_log_det_is_one_pass_and_exact(case):
    model, items = forms(case)
    assert items or case.kind in ("split",), "nothing to check"
    for form, m, h in items:
        kind = kind_of(model, m, case.kind)
        where = f"{form} {type(m).__name__} (kind {kind})"
        pending = kind in PENDING
        if not pending:
            missing = [type(b).__name__ for b in bijectors(m) if not overrides(b)]
            assert not missing, f"{where}: no one-pass inverse_with_log_det in {missing} (base two-pass fallback)"
        with torch.no_grad():
            y, ld_fwd = m(h)
            (x, ld), calls = count_forward_calls(m, lambda: m.inverse_with_log_det(y))
            x_ref = m.inverse(y)
            ld_at_x = m(x)[1]
        if not pending:
            assert not calls, f"{where}: inverse_with_log_det ran forward of {calls} (two passes)"
        assert x.shape == h.shape and ld.shape == (h.shape[0],), where
        assert ld.dtype == ld_fwd.dtype, f"{where}: log-det dtype {ld.dtype}, forward gives {ld_fwd.dtype}"
        assert rel(x, x_ref) <= 1e-12, f"{where}: x differs from inverse(y) by {rel(x, x_ref):.2e}"
        assert rel(ld, ld_at_x) <= 1e-12, f"{where}: log-det differs from forward(x) by {rel(ld, ld_at_x):.2e}"
        shape = tuple(h.shape[1:])
        n = math.prod(shape)
        for i in range(2):
            jac = jacobian(lambda v: m(v.reshape(1, *shape))[0].reshape(-1), x[i].reshape(-1).clone())
            ref = torch.linalg.slogdet(jac.reshape(n, n))[1]
            err = float((ld[i] - ref).abs() / ref.abs().clamp_min(1.0))
            assert err <= 1e-10, f"{where}: log-det vs autograd Jacobian {err:.2e}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sixteen_bit_fused_log_dets_have_the_forward_dtype(case):
    """Fused forms accumulate log-dets in float32 under a 16-bit cast: the inverse mirrors forward."""
    model, x = build(kindspecs.spec_text(case))
    fused = copy.deepcopy(fused_of(kindspecs.spec_text(case))).bfloat16()
    for m, h in step_inputs(fused.steps, x.bfloat16()):
        with torch.no_grad():
            y, ld_fwd = m(h)
            x_back, ld = m.inverse_with_log_det(y)
            ld_at_x = m(x_back)[1]
        assert ld.dtype == ld_fwd.dtype, f"{type(m).__name__}: {ld.dtype} vs forward's {ld_fwd.dtype}"
        kind = layer_kinds().get(kind_of(model, m, case.kind))
        if kind is not None and kind.constant_logdet:  # the very constant forward returns
            assert torch.equal(ld, ld_at_x), f"{type(m).__name__}: log-det is not forward's at the returned x"
        else:  # one pass reads the log-det off the inverse's own values, forward(x) off 16-bit x
            assert rel(ld, ld_at_x) <= 0.02, f"{type(m).__name__}: log-det vs forward(x) {rel(ld, ld_at_x):.2e}"


def test_pending_list_is_current():
    """A kind stays on PENDING only while some module of it still lacks the one-pass override."""
    for kind in sorted(k for k in PENDING if k in layer_kinds()):
        lacking = set()
        for case in kindspecs.layer_cases([kind]):
            model, items = forms(case)
            for _form, m, _h in items:
                if kind_of(model, m, kind) == kind:
                    lacking.update(type(b).__name__ for b in bijectors(m) if not overrides(b))
        assert lacking, f"{kind!r} has its one-pass overrides now: remove it from PENDING ({__file__})"
