"""The spike-and-slab prior: density, annealing, sampling, sparsity, argument checks."""

from __future__ import annotations

import math

import pytest
import torch

from flowdsl.compiler.kinds import get_prior
from flowdsl.compiler.registry import CheckContext
from flowdsl.runtime.priors import get_prior_lowering
from flowdsl.runtime.priors.spike_slab import SpikeSlabPrior


class _Failed(Exception):
    pass


def _ctx():
    def fail(message, arg=None):
        raise _Failed(f"{arg}: {message}")

    return CheckContext(fail)


def _normal_logpdf(z, s):
    return -0.5 * (z / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)


def test_registered_with_language_defaults():
    kind = get_prior("spike_slab")
    assert kind is not None
    a = kind.Args()
    assert (a.spike, a.slab, a.weight, a.anneal) == (0.01, 1.0, 0.5, 0)
    prior = get_prior_lowering("spike_slab")(a, (2, 4, 4))
    assert isinstance(prior, SpikeSlabPrior) and prior.log_prob(torch.zeros(3, 2, 4, 4)).shape == (3,)


def test_log_prob_matches_mixture_formula_float64():
    p = SpikeSlabPrior((3,), spike=0.1, slab=2.0, weight=0.3).double()
    z = torch.tensor([[0.0, 0.05, -1.5], [3.0, -0.2, 0.0]], dtype=torch.float64)
    want = torch.zeros(2, dtype=torch.float64)
    for b in range(2):
        for v in z[b].tolist():
            want[b] += math.log(0.7 * math.exp(_normal_logpdf(v, 0.1)) + 0.3 * math.exp(_normal_logpdf(v, 2.0)))
    got = p.log_prob(z)
    assert got.dtype == torch.float64
    assert torch.allclose(got, want, atol=1e-12, rtol=0)
    # stable far in the tails (logsumexp): no -inf although the spike underflows
    assert torch.isfinite(p.log_prob(torch.full((1, 3), 40.0, dtype=torch.float64))).all()


def test_density_integrates_to_one():
    p = SpikeSlabPrior((1,), spike=0.05, slab=1.5, weight=0.4).double()
    z = torch.linspace(-12, 12, 400_001, dtype=torch.float64).unsqueeze(1)
    dens = torch.exp(p.log_prob(z))
    assert abs(float(torch.trapezoid(dens, z[:, 0])) - 1.0) < 1e-6


def test_geometric_annealing_schedule_and_buffer():
    p = SpikeSlabPrior((2,), spike=0.01, slab=1.0, weight=0.5, anneal=100)
    assert math.isclose(float(p.spike_width()), 1.0, rel_tol=1e-6)
    p.set_step(50)
    assert math.isclose(float(p.spike_width()), 0.1, rel_tol=1e-5)  # sqrt(1 · 0.01)
    p.set_step(100)
    assert math.isclose(float(p.spike_width()), 0.01, rel_tol=1e-5)
    p.set_step(10_000)
    assert math.isclose(float(p.spike_width()), 0.01, rel_tol=1e-5)
    widths = []
    for t in range(0, 101, 10):
        p.set_step(t)
        widths.append(float(p.spike_width()))
    ratios = [b / a for a, b in zip(widths, widths[1:])]
    assert max(ratios) - min(ratios) < 1e-5  # same factor every step: geometric
    # the step counter is persistent state (checkpoints), the constants are not
    p.set_step(10_000)
    sd = p.state_dict()
    assert set(sd) == {"anneal_step"} and int(sd["anneal_step"]) == 10_000
    q = SpikeSlabPrior((2,), anneal=100)
    q.load_state_dict(sd)
    assert int(q.anneal_step) == 10_000
    q.advance(5)
    assert int(q.anneal_step) == 10_005
    # at step 0 the mixture is one wide Gaussian: dense
    d = SpikeSlabPrior((1,), spike=0.01, slab=1.0, weight=0.3, anneal=10).double()
    z = torch.tensor([[0.7]], dtype=torch.float64)
    assert math.isclose(float(d.log_prob(z)), _normal_logpdf(0.7, 1.0), abs_tol=1e-12)
    # anneal=0: the spike from the start
    assert math.isclose(float(SpikeSlabPrior((1,), spike=0.02).spike_width()), 0.02, rel_tol=1e-6)


def test_sampling_moments_and_temperature():
    torch.manual_seed(0)
    p = SpikeSlabPrior((4, 2, 2), spike=0.01, slab=2.0, weight=0.25)
    z = p.sample(20_000)
    assert z.shape == (20_000, 4, 2, 2) and z.dtype == torch.float32
    var = 0.25 * 4.0 + 0.75 * 1e-4
    assert abs(float(z.var()) - var) / var < 0.03
    frac_spike = float((z.abs() < 0.05).float().mean())
    assert abs(frac_spike - (0.75 + 0.25 * 0.02)) < 0.02
    zt = p.sample(20_000, temperature=0.5)
    assert abs(float(zt.var()) - 0.25 * var) / (0.25 * var) < 0.03
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(p.sample(5, generator=g1), p.sample(5, generator=g2))
    assert p.sample(3, dtype=torch.float64).dtype == torch.float64
    assert p.double().sample(2).dtype == torch.float64


def test_sparsity_threshold_is_crossing_point():
    p = SpikeSlabPrior((1,), spike=0.1, slab=1.0, weight=0.5).double()
    t = p.threshold()
    lp0 = math.log(0.5) + _normal_logpdf(float(t), 0.1)
    lp1 = math.log(0.5) + _normal_logpdf(float(t), 1.0)
    assert abs(lp0 - lp1) < 1e-10
    assert math.isclose(float(p.spike_responsibility(t.reshape(1, 1))), 0.5, abs_tol=1e-9)
    z = torch.tensor([[0.0], [0.1], [0.5], [2.0]], dtype=torch.float64)
    assert p.sparsity(z) == 0.5  # 0 and 0.1 fall inside z* ≈ 0.215
    rep = p.sparsity_report(z)
    assert rep["fraction_in_spike"] == 0.5 and math.isclose(rep["threshold"], float(t))
    assert set(rep) >= {"fraction_in_spike", "mean_spike_responsibility", "threshold", "spike_width", "step"}
    # at the start of annealing both components coincide: spike dominates iff its weight is larger
    a = SpikeSlabPrior((1,), weight=0.7, anneal=10)
    assert float(a.threshold()) == 0.0 and a.sparsity(torch.zeros(4, 1)) == 0.0
    b = SpikeSlabPrior((1,), weight=0.3, anneal=10)
    assert math.isinf(float(b.threshold())) and b.sparsity(torch.ones(4, 1)) == 1.0


def test_gradients_flow_and_no_host_sync_shape():
    p = SpikeSlabPrior((5,), spike=0.05, slab=1.0, weight=0.5)
    z = torch.randn(7, 5, requires_grad=True)
    p.log_prob(z).sum().backward()
    assert torch.isfinite(z.grad).all()
    # score = −z·[w0/σ0² + w1/σ1²] (responsibilities)
    with torch.no_grad():
        r0 = p.spike_responsibility(z)
        score = -z * (r0 / 0.05**2 + (1 - r0) / 1.0)
    assert torch.allclose(z.grad, score, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"spike": 0.0}, "spike"),
        ({"spike": -1.0}, "spike"),
        ({"spike": 2.0, "slab": 1.0}, "slab"),
        ({"spike": 1.0, "slab": 1.0}, "slab"),
        ({"weight": 0.0}, "weight"),
        ({"weight": 1.0}, "weight"),
        ({"anneal": -1}, "anneal"),
        ({"slab": math.inf}, "slab"),
    ],
    ids=["spike0", "spike_neg", "slab_narrow", "slab_equal", "weight0", "weight1", "anneal_neg", "slab_inf"],
)
def test_argument_checks(kwargs, arg):
    kind = get_prior("spike_slab")
    with pytest.raises(_Failed, match=f"^{arg}: spike_slab {arg}"):
        kind.check(kind.Args(**kwargs), (4,), _ctx())


def test_valid_arguments_pass_check():
    kind = get_prior("spike_slab")
    kind.check(kind.Args(spike=0.001, slab=3.0, weight=0.9, anneal=500), (4,), _ctx())


def test_spike_slab_spec_exports_to_onnx(tmp_path):
    import flowdsl
    from flowdsl.runtime.export.onnx import check_parity

    spec = flowdsl.parse(
        "flow ss { input image(channels=1, height=4, width=4, levels=17) squeeze(factor=2) actnorm "
        "coupling(hidden=4, net=conv, depth=1) prior spike_slab(spike=0.05, weight=0.3, anneal=100) }"
    )
    model = flowdsl.compile(spec, seed=0)
    model.prior.set_step(40)  # the exported log_prob uses the spike width of this step
    paths = flowdsl.export_onnx(model, tmp_path)
    res = check_parity(model.fuse(), *paths)
    assert res["log_prob_rel"] < 1e-5 and res["z_rel"] < 1e-5
