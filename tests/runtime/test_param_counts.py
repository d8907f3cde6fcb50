"""Every kind's parameter-count formula (compiler side, no torch) against the module the runtime
lowers it to, on randomised arguments and shapes (hypothesis); priors likewise.

The compiler's ``flowdsl check`` table and its resource limit use the formula, so a formula that
drifts from the module would misreport; this is the independent reference.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowdsl.compiler.kinds import get_layer, get_prior, layer_kinds, prior_kinds
from flowdsl.runtime.bijector import Chain
from flowdsl.runtime.layers import layer_lowering, lowered_kinds
from flowdsl.runtime.priors import get_prior_lowering, lowered_priors


class _Refuse(Exception):
    pass


class _Ctx:
    """A check context that turns a rejection into an exception (the example is discarded)."""

    layer_id = "t"

    def fail(self, message, arg=None):
        raise _Refuse(message)

    def warn(self, message, arg=None):
        pass


def _module_params(kind_name: str, args, shape) -> int:
    kind = get_layer(kind_name)
    bodies = None
    if kind.bodies:
        bodies = {inst.label: Chain([]) for inst in kind.body_instances(args, shape, _Ctx())}
    module = layer_lowering(kind_name)(args, shape, bodies)
    return sum(p.numel() for p in module.parameters())


def _args_strategy(kind_name: str):
    """Random arguments drawn from each field of the kind's Args model."""
    hidden = st.integers(1, 40)
    table = {
        "actnorm": st.just({}),
        "conv1x1": st.fixed_dictionaries({"param": st.sampled_from(["lu", "qr", "plain"])}),
        "conv": st.fixed_dictionaries(
            {"kind": st.sampled_from(["emerging", "periodic"]), "kernel": st.sampled_from([1, 2, 3, 4, 5])}
        ),
        "butterfly": st.fixed_dictionaries(
            {
                "depth": st.sampled_from(["auto", 1, 2, 3]),
                "over": st.sampled_from(["all", "channels", "width", "height"]),
            }
        ),
        "coupling": st.one_of(
            st.fixed_dictionaries(
                {
                    "kind": st.sampled_from(["affine", "additive"]),
                    "hidden": hidden,
                    "net": st.sampled_from([None, "conv", "resnet", "mlp"]),
                    "depth": st.integers(1, 4),
                    "mask": st.sampled_from(["channel", "checkerboard"]),
                }
            ),
            st.fixed_dictionaries(
                {
                    "kind": st.just("spline"),
                    "hidden": hidden,
                    "net": st.sampled_from([None, "conv", "resnet", "mlp"]),
                    "depth": st.integers(1, 4),
                    "mask": st.sampled_from(["channel", "checkerboard"]),
                },
                optional={"bins": st.integers(2, 12), "bound": st.floats(0.5, 5.0)},
            ),
        ),
        "autoregressive": st.fixed_dictionaries(
            {
                "kind": st.sampled_from(["affine", "spline"]),
                "hidden": hidden,
                "depth": st.integers(1, 4),
                "order": st.sampled_from(["natural", "reverse", "random"]),
                "direction": st.sampled_from(["forward", "inverse"]),
            },
            optional={"bins": st.integers(2, 12)},
        ).map(lambda a: a if a["kind"] == "spline" else {k: v for k, v in a.items() if k != "bins"}),
        "permute": st.fixed_dictionaries({"kind": st.sampled_from(["reverse", "shuffle"]), "seed": st.integers(0, 9)}),
        "squeeze": st.fixed_dictionaries({"factor": st.sampled_from([1, 2, 3])}),
        "split": st.just({}),
        "logit": st.fixed_dictionaries({"alpha": st.floats(0.0, 0.5, exclude_max=True)}),
        "rg": st.fixed_dictionaries({"kernel": st.sampled_from([2, 4]), "levels": st.sampled_from(["auto", 1, 2])}),
    }
    return table[kind_name]


SHAPES = st.one_of(
    st.tuples(st.integers(1, 8), st.sampled_from([2, 4, 6, 8]), st.sampled_from([2, 4, 6, 8])),
    st.tuples(st.integers(1, 24)),
)


def test_every_kind_and_prior_has_a_lowering_and_an_example():
    assert set(layer_kinds()) <= set(lowered_kinds())
    assert set(prior_kinds()) <= set(lowered_priors())
    for name in layer_kinds():
        _args_strategy(name)  # a new kind needs an entry in the strategy table


@pytest.mark.parametrize("kind_name", sorted(layer_kinds()))
def test_param_count_formula_matches_the_module(kind_name):
    kind = get_layer(kind_name)
    checked = {"n": 0}

    @settings(max_examples=60)
    @given(raw=_args_strategy(kind_name), shape=SHAPES)
    def run(raw, shape):
        if kind.spatial and len(shape) != 3:
            return
        args = kind.Args.model_validate(raw, strict=False)
        try:
            out = kind.infer_shape(args, shape, _Ctx())
        except _Refuse:
            return
        if math.prod(out) < 1:
            return
        assert kind.param_count(args, shape) == _module_params(kind_name, args, shape), (raw, shape)
        checked["n"] += 1

    run()
    assert checked["n"] >= 5, f"too few accepted examples for {kind_name}"


@pytest.mark.parametrize("prior_name", sorted(prior_kinds()))
@pytest.mark.parametrize("learned", [False, True])
@pytest.mark.parametrize("shape", [(3, 4, 4), (7,)])
def test_prior_param_count_matches_the_module(prior_name, learned, shape):
    pk = get_prior(prior_name)
    raw = {"learned": learned} if "learned" in pk.Args.model_fields else {}
    args = pk.Args.model_validate(raw, strict=False)
    module = get_prior_lowering(prior_name)(args, shape)
    assert pk.param_count(args, shape) == sum(p.numel() for p in module.parameters())
