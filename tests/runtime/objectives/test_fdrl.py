"""FDRL: losses, the f′ table, the checker's rules at their locations, the sampler step,
sources, estimators, EMA, classifier guidance and evaluation metrics (fast, no training runs;
the training/CLI tests are in test_fdrl_train.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import flowdsl
from flowdsl.compiler.kinds.fdrl import resolve_args
from flowdsl.errors import CheckError, DataError
from flowdsl.runtime.objectives.fdrl.estimators import Estimator, build_estimator
from flowdsl.runtime.objectives.fdrl.evaluate import energy_distance, frechet_distance
from flowdsl.runtime.objectives.fdrl.losses import bregman_loss, f_prime, f_prime_of_ratio, lr_loss, lsif_loss
from flowdsl.runtime.objectives.fdrl.model import FDRLModel, FDRLSettings, ema_update
from flowdsl.runtime.objectives.fdrl.sampler import Guidance, energy_grad, flow_step, frozen, run_flow
from flowdsl.runtime.objectives.fdrl.sources import DataGaussianSource, DataScale, UniformSource


def vec_spec(objective: str, dim: int = 2, layers: str = "") -> str:
    return f"flow f {{\n    input vector(dim={dim})\n{layers}    objective {objective}\n}}\n"


def img_spec(objective: str) -> str:
    return f"flow f {{\n    input image(channels=1, height=8, width=8, levels=17)\n    objective {objective}\n}}\n"


def col(objective: str, needle: str) -> int:
    """1-based column of ``needle`` in the objective line that vec_spec/img_spec write."""
    return len("    objective ") + objective.index(needle) + 1


def located(text: str) -> CheckError:
    with pytest.raises(CheckError) as ei:
        flowdsl.parse(text, filename="t.flow")
    return ei.value


# -- losses and f′ ---------------------------------------------------------------------------


def test_lr_loss_hand_computed():
    # s = log r; L = -mean log σ(-s_p) - mean log σ(s_q)
    assert float(lr_loss(torch.tensor([0.0]), torch.tensor([0.0]))) == pytest.approx(2 * math.log(2), abs=1e-7)
    s = torch.tensor([math.log(3.0)])
    # -log(1/4) - log(3/4) = log 4 + log 4/3
    assert float(lr_loss(s, s)) == pytest.approx(math.log(4) + math.log(4 / 3), abs=1e-6)
    # two examples each side: mean over each
    sp, sq = torch.tensor([0.0, math.log(3.0)]), torch.tensor([math.log(3.0), 0.0])
    want = -(0.5 * (math.log(0.5) + math.log(0.25)) + 0.5 * (math.log(0.75) + math.log(0.5)))
    assert float(lr_loss(sp, sq)) == pytest.approx(want, abs=1e-6)
    # log-sigmoid keeps it finite far out
    big = torch.tensor([100.0, -100.0])
    assert math.isfinite(float(lr_loss(big, big)))
    assert float(lr_loss(torch.tensor([-100.0]), torch.tensor([100.0]))) == pytest.approx(0.0, abs=1e-6)


def test_lsif_loss_hand_computed():
    assert float(lsif_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 4.0]))) == pytest.approx(0.5 * 5 - 3)
    assert float(bregman_loss("lsif", torch.tensor([2.0]), torch.tensor([1.0]))) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bregman_loss("nope", torch.zeros(1), torch.zeros(1))


def test_losses_match_the_written_out_formulas_on_random_values():
    """lr: −mean_p log(1/(1+r)) − mean_q log(r/(1+r)); lsif: ½ mean_p r² − mean_q r (float64)."""
    g = torch.Generator().manual_seed(7)
    for n_p, n_q in ((1, 1), (5, 3), (64, 17)):
        s_p = torch.randn(n_p, generator=g, dtype=torch.float64) * 2
        s_q = torch.randn(n_q, generator=g, dtype=torch.float64) * 2
        r_p, r_q = torch.exp(s_p), torch.exp(s_q)
        data_term = sum(math.log(1 / (1 + float(r))) for r in r_p) / n_p
        particle_term = sum(math.log(float(r) / (1 + float(r))) for r in r_q) / n_q
        want_lr = -(data_term + particle_term)
        assert float(lr_loss(s_p, s_q)) == pytest.approx(want_lr, rel=1e-12, abs=1e-12)
        assert float(bregman_loss("lr", s_p, s_q)) == pytest.approx(want_lr, rel=1e-12, abs=1e-12)
        want_lsif = 0.5 * sum(float(r) ** 2 for r in r_p) / n_p - sum(float(r) for r in r_q) / n_q
        assert float(lsif_loss(r_p, r_q)) == pytest.approx(want_lsif, rel=1e-12, abs=1e-12)
        assert float(bregman_loss("lsif", r_p, r_q)) == pytest.approx(want_lsif, rel=1e-12, abs=1e-12)


def _pointwise_population_gradient(loss_fn, out: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """∂/∂out(x) of E_p[ℓ_p(out)] + E_q[ℓ_q(out)] on a grid, from the library's loss itself.

    ``loss_fn(out_p, out_q)`` is mean ℓ_p(out_p) + mean ℓ_q(out_q); with N grid points, the
    gradient at point k of its p-part (q-part) is ℓ_p′(out_k)/N (ℓ_q′(out_k)/N), so the
    population gradient p(x_k)·ℓ_p′ + q(x_k)·ℓ_q′ is N·(p·g_p + q·g_q).
    """
    out_p = out.detach().clone().requires_grad_(True)
    out_q = out.detach().clone().requires_grad_(True)
    g_p, g_q = torch.autograd.grad(loss_fn(out_p, out_q), (out_p, out_q))
    return out.numel() * (p * g_p + q * g_q)


def test_library_losses_are_minimised_at_the_true_ratio():
    """Population version: data p = N(0,1), particles q = N(1,1); the library's lr_loss is
    stationary exactly at s = log q/p and lsif_loss at r = q/p (the target ratio q/p)."""
    x = torch.linspace(-4, 5, 2001, dtype=torch.float64)
    p = torch.exp(-0.5 * x**2)
    q = torch.exp(-0.5 * (x - 1) ** 2)
    true_log_r = torch.log(q / p)
    for shift in (-0.3, 0.0, 0.3):
        g = _pointwise_population_gradient(lr_loss, true_log_r + shift, p, q)
        if shift == 0.0:
            assert float(g.abs().max()) < 1e-9
        else:  # pushed back towards the truth everywhere
            assert bool((torch.sign(g) == math.copysign(1.0, shift)).all())
    for factor in (0.8, 1.0, 1.25):
        g = _pointwise_population_gradient(lsif_loss, (q / p) * factor, p, q)
        if factor == 1.0:
            assert float(g.abs().max()) < 1e-9
        else:
            assert bool((torch.sign(g) == math.copysign(1.0, factor - 1.0)).all())


def test_f_prime_table():
    r = torch.tensor([3.0], dtype=torch.float64)
    s = torch.log(r)
    assert float(f_prime("kl", s, "lr")) == pytest.approx(math.log(3) + 1)
    assert float(f_prime("js", s, "lr")) == pytest.approx(math.log(2 * 3 / 4))
    assert float(f_prime("logd", s, "lr")) == pytest.approx(math.log(4) + 1)
    assert float(f_prime("pearson", r, "lsif")) == pytest.approx(4.0)
    # both heads agree on every entry of the table
    rr = torch.tensor([0.1, 0.5, 1.0, 2.0, 7.0], dtype=torch.float64)
    for div in ("kl", "js", "logd", "pearson"):
        a = f_prime(div, torch.log(rr), "lr")
        b = f_prime(div, rr, "lsif")
        c = f_prime_of_ratio(div, rr)
        assert torch.allclose(a, c, atol=1e-12) and torch.allclose(b, c, atol=1e-12), div
    # f′ is the derivative of f (Table 1)
    f = {
        "pearson": lambda t: (t - 1) ** 2,
        "kl": lambda t: t * torch.log(t),
        "js": lambda t: t * torch.log(t) - (t + 1) * torch.log((t + 1) / 2),
        "logd": lambda t: (t + 1) * torch.log(t + 1) - 2 * math.log(2),
    }
    for div, fn in f.items():
        t = rr.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(t).sum(), t)
        assert torch.allclose(g, f_prime_of_ratio(div, rr), atol=1e-10), div
    # the lr head never overflows: js and logd at log r = ±200
    s = torch.tensor([-200.0, 200.0])
    for div in ("kl", "js", "logd"):
        assert torch.isfinite(f_prime(div, s, "lr")).all()


# -- the checker ------------------------------------------------------------------------------


def test_pairing_rejections_are_located():
    e = located(vec_spec("fdrl(loss=lsif, divergence=kl)"))
    line = "    objective fdrl(loss=lsif, divergence=kl)"
    assert (e.line, e.column) == (3, line.index("kl)") + 1) == (3, 42)
    assert "divergence=kl does not go with loss=lsif" in str(e) and "pearson" in str(e)
    e = located(vec_spec("fdrl(loss=lr, divergence=pearson)"))
    assert (e.line, e.column) == (3, col("fdrl(loss=lr, divergence=pearson)", "pearson")) and "kl or js or logd" in str(
        e
    )
    # loss=lsif with the default divergence (kl): pointed at the loss, says what to write
    e = located(vec_spec("fdrl(loss=lsif)"))
    assert (e.line, e.column) == (3, col("fdrl(loss=lsif)", "lsif")) and "divergence=pearson" in str(e)
    for ok in (
        "fdrl(loss=lr, divergence=kl)",
        "fdrl(loss=lr, divergence=js)",
        "fdrl(loss=lr, divergence=logd)",
        "fdrl(loss=lsif, divergence=pearson)",
        "fdrl",
    ):
        flowdsl.parse(vec_spec(ok))


def test_estimator_and_source_rules_are_located():
    e = located(vec_spec("fdrl(estimator=resnet(hidden=8, blocks=1))"))
    assert (e.line, e.column) == (3, col("fdrl(estimator=resnet", "resnet")) and "needs an image input" in str(e)
    e = located(vec_spec("fdrl(estimator=convnet)"))
    assert (e.line, e.column) == (3, col("fdrl(estimator=convnet", "convnet"))
    e = located(vec_spec("fdrl(source=prior)"))
    assert (e.line, e.column) == (3, col("fdrl(source=prior)", "prior")) and "needs layers" in str(e)
    e = located(vec_spec("fdrl(estimator=mlp(width=3))"))
    assert e.line == 3 and "unknown argument 'width'" in str(e)
    e = located(vec_spec("fdrl(steps=0)"))
    assert e.line == 3
    # vectors default to mlp; images to resnet; mlp is allowed on images
    assert resolve_args(flowdsl.parse(vec_spec("fdrl"))).estimator == {
        "call": "mlp",
        "args": {"hidden": 256, "depth": 3},
    }
    assert resolve_args(flowdsl.parse(img_spec("fdrl"))).estimator["call"] == "resnet"
    assert resolve_args(flowdsl.parse(img_spec("fdrl(estimator=mlp(hidden=8))"))).estimator["args"] == {
        "hidden": 8,
        "depth": 3,
    }
    # source=prior with layers is fine
    flowdsl.parse(vec_spec("fdrl(source=prior)", layers="    actnorm\n"))


def test_data_gaussian_memory_limit(monkeypatch):
    monkeypatch.setenv("FLOWDSL_FDRL_MAX_COVARIANCE_BYTES", str(20 * 63 * 63))
    flowdsl.parse(vec_spec("fdrl", dim=63))
    e = located(vec_spec("fdrl", dim=64))
    assert (
        (e.line, e.column) == (3, col("fdrl", "fdrl"))
        and "64×64 covariance" in str(e)
        and "FLOWDSL_FDRL_MAX_COVARIANCE_BYTES" in str(e)
    )
    e = located(vec_spec("fdrl(source=data_gaussian)", dim=64))
    assert (e.line, e.column) == (3, col("fdrl(source=data_gaussian)", "data_gaussian"))
    flowdsl.parse(vec_spec("fdrl(source=uniform)", dim=64))
    with pytest.raises(DataError, match="covariance"):
        DataGaussianSource((64,), max_bytes=1000)


def test_fdrl_spec_compiles_to_an_identity_flow():
    spec = flowdsl.parse(img_spec("fdrl(estimator=convnet(hidden=8, depth=2))"))
    model = flowdsl.compile(spec)
    x = torch.rand(3, 1, 8, 8)
    z, logdet = model(x)
    assert torch.equal(z, x) and torch.equal(logdet, torch.zeros(3))


# -- estimators -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "est",
    [
        {"call": "resnet", "args": {"hidden": 8, "blocks": 2}},
        {"call": "convnet", "args": {"hidden": 8, "depth": 3}},
        {"call": "mlp", "args": {"hidden": 16, "depth": 2}},
    ],
)
def test_estimators_output_one_value_per_example_without_batch_coupling(est):
    for loss in ("lr", "lsif"):
        e = build_estimator(est, (1, 8, 8), loss)
        x = torch.randn(5, 1, 8, 8)
        out = e(x)
        assert out.shape == (5,)
        if loss == "lsif":
            assert (out > 0).all() and e.head == "r"
        else:
            assert e.head == "log_r"
        assert torch.allclose(e(x[2:3]), out[2:3], atol=1e-6)  # no batch coupling
        assert torch.allclose(e.log_ratio(x), torch.log(e.ratio(x)), atol=1e-5)
    with pytest.raises(ValueError, match="image input"):
        Estimator("convnet", (2,), "lr", hidden=4, depth=1)


def test_resnet_uses_leaky_relu_residual_blocks_without_batchnorm():
    e = build_estimator({"call": "resnet", "args": {"hidden": 8, "blocks": 3}}, (3, 16, 16), "lr")
    kinds = {type(m).__name__ for m in e.modules()}
    assert "ResBlock" in kinds and not any("Norm" in k for k in kinds)
    assert sum(isinstance(m, nn.AvgPool2d) for m in e.modules()) == 2  # 16 -> 8 -> 4


# -- the sampler --------------------------------------------------------------------------------


class Quadratic(nn.Module):
    """out(x) = Σ w·x², so ∇ₓ out = 2·w·x."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -0.25], dtype=torch.float64))

    def forward(self, x):
        return (self.w * x * x).sum(-1)


def test_sampler_step_equals_manual_computation():
    est = Quadratic()
    x = torch.tensor([[1.0, 2.0], [-0.5, 0.3], [0.0, -1.0]], dtype=torch.float64)
    w = est.w.detach()
    eta = 0.3
    with frozen(est):
        # kl: f′ = log r + 1 -> ∇ = 2 w x
        assert torch.allclose(flow_step(est, x, eta, 0.0, "kl", "lr"), x - eta * 2 * w * x)
        # js: f′ = log 2 + log σ(s) -> ∇ = σ(-s)·2wx
        s = (w * x * x).sum(-1, keepdim=True)
        assert torch.allclose(flow_step(est, x, eta, 0.0, "js", "lr"), x - eta * torch.sigmoid(-s) * 2 * w * x)
        # logd: f′ = softplus(s) + 1 -> ∇ = σ(s)·2wx
        assert torch.allclose(flow_step(est, x, eta, 0.0, "logd", "lr"), x - eta * torch.sigmoid(s) * 2 * w * x)
        # lsif + pearson: f′ = 2(r - 1) -> ∇ = 2·2wx
        assert torch.allclose(flow_step(est, x, eta, 0.0, "pearson", "lsif"), x - eta * 4 * w * x)
        # noise: ν·ξ with ξ from the generator
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        got = flow_step(est, x, eta, 0.1, "kl", "lr", generator=g1)
        want = x - eta * 2 * w * x + 0.1 * torch.randn(x.shape, generator=g2, dtype=x.dtype)
        assert torch.allclose(got, want)
    # K steps of kl with no noise: x_K = (1 - 2ηw)^K x
    xk = run_flow(est, x, 4, eta, 0.0, "kl", "lr")
    assert torch.allclose(xk, x * (1 - 2 * eta * w) ** 4)
    assert not xk.requires_grad and est.w.requires_grad and est.w.grad is None


def test_run_flow_chunks_clamp_and_determinism():
    est = build_estimator({"call": "mlp", "args": {"hidden": 8, "depth": 2}}, (2,), "lr")
    x0 = torch.randn(10, 2)
    a = run_flow(est, x0, 5, 0.1, 0.05, "kl", "lr", generator=torch.Generator().manual_seed(1))
    b = run_flow(est, x0, 5, 0.1, 0.05, "kl", "lr", generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    c = run_flow(est, x0, 5, 0.1, 0.0, "kl", "lr", batch=3)
    d = run_flow(est, x0, 5, 0.1, 0.0, "kl", "lr")
    assert torch.allclose(c, d, atol=1e-6)
    e = run_flow(est, x0 * 10, 1, 0.1, 0.0, "kl", "lr", clamp=(-1.0, 1.0))
    assert e.abs().max() <= 1.0


def test_guidance_adds_minus_phi_grad_log_p():
    est = Quadratic()
    clf = nn.Linear(2, 3).double()
    x = torch.randn(4, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    phi = 0.7
    g = Guidance(clf, y, phi)
    with frozen(est, clf):
        got = energy_grad(est, x, "kl", "lr", g)
    xg = x.clone().requires_grad_(True)
    logp = torch.log_softmax(clf(xg), -1)[torch.arange(4), y]
    (glp,) = torch.autograd.grad(logp.sum(), xg)
    assert torch.allclose(got, 2 * est.w.detach() * x - phi * glp)


def test_classifier_guidance_changes_class_predictions():
    """With a zero ratio field, guided particles drift into the requested class."""
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Linear(2, 16), nn.SiLU(), nn.Linear(16, 3))
    # a 3-class toy: classes at angles 0, 120, 240 degrees
    ang = torch.tensor([0.0, 2.0944, 4.1888])
    centers = torch.stack([ang.cos(), ang.sin()], 1)
    lab = torch.arange(600) % 3
    pts = centers[lab] + 0.3 * torch.randn(600, 2)
    opt = torch.optim.Adam(clf.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(clf(pts), lab).backward()
        opt.step()
    est = build_estimator({"call": "mlp", "args": {"hidden": 8, "depth": 1}}, (2,), "lr")
    with torch.no_grad():
        est.net.out.weight.zero_()
    x0 = 0.2 * torch.randn(300, 2)
    want = torch.full((300,), 2)
    before = (clf(x0).argmax(-1) == want).float().mean()
    x = run_flow(est, x0, 30, 0.2, 0.0, "kl", "lr", guidance=Guidance(clf, torch.tensor([2]), 1.0))
    after = (clf(x).argmax(-1) == want).float().mean()
    assert before < 0.6 and after > 0.95
    x_none = run_flow(est, x0, 30, 0.2, 0.0, "kl", "lr")
    assert torch.allclose(x_none, x0)


# -- sources, scale, EMA ------------------------------------------------------------------------


def test_data_gaussian_source_fits_mean_and_covariance():
    torch.manual_seed(0)
    a = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [0.1, -0.3, 0.2]])
    x = torch.randn(20000, 3) @ a.T + torch.tensor([0.5, -1.0, 2.0])
    src = DataGaussianSource((3,))
    src.fit(x)
    s = src.sample(40000, torch.Generator().manual_seed(1))
    assert torch.allclose(s.mean(0), x.mean(0), atol=0.03)
    assert torch.allclose(torch.cov(s.T), torch.cov(x.T) + 1e-4 * torch.eye(3), atol=0.03)
    assert torch.equal(src.sample(5, torch.Generator().manual_seed(2)), src.sample(5, torch.Generator().manual_seed(2)))
    img = DataGaussianSource((1, 2, 2), clamp=(-1.0, 1.0))
    img.fit(torch.randn(100, 1, 2, 2) * 3)
    assert img.sample(50).abs().max() <= 1.0
    u = UniformSource((1, 8, 8)).sample(1000)
    assert u.min() >= -1 and u.max() <= 1 and u.shape == (1000, 1, 8, 8)


def test_data_scale_maps_levels_and_flow_samples():
    sc = DataScale((1, 8, 8), 17)
    v = sc.from_raw(torch.tensor([0.0, 8.0, 16.0]))
    assert torch.allclose(v, torch.tensor([-1.0, 0.0, 1.0]))
    centres = (torch.arange(17.0) + 0.5) / 17
    assert torch.allclose(sc.from_unit(centres), torch.linspace(-1, 1, 17), atol=1e-6)
    assert torch.equal(torch.floor(sc.to_unit(torch.linspace(-1, 1, 17)) * 17), torch.arange(17.0))
    assert torch.allclose(sc.quantize(torch.tensor([0.07, 0.05, -0.99, 1.5])), torch.tensor([0.125, 0.0, -1.0, 1.0]))
    vs = DataScale((2,), None)
    x = torch.tensor([[0.0, 10.0], [4.0, 20.0], [2.0, 12.0]])
    vs.fit(x)
    m = vs.from_raw(x)
    assert m.min() == -1 and m.max() == 1 and torch.allclose(vs.to_data(m), x)


def test_ema_update():
    a, b = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        a.weight.fill_(1.0), a.bias.fill_(0.0), b.weight.fill_(3.0), b.bias.fill_(2.0)
    ema_update(a, b, 0.75)
    assert torch.allclose(a.weight, torch.full((1, 2), 1.5)) and torch.allclose(a.bias, torch.tensor([0.5]))
    ema_update(a, b, 0.0)
    assert torch.equal(a.weight, b.weight)


def test_fdrl_model_holds_estimator_ema_and_source_state():
    spec = flowdsl.parse(img_spec("fdrl(estimator=convnet(hidden=8, depth=2), loss=lsif, divergence=pearson)"))
    m = FDRLModel(spec, FDRLSettings(), seed=3)
    keys = set(m.state_dict())
    assert any(k.startswith("estimator.") for k in keys) and any(k.startswith("ema.") for k in keys)
    assert {"source.mean", "source.chol"} <= keys
    assert not any(p.requires_grad for p in m.ema.parameters())
    assert m.kappa == 20 and m.estimator.head == "r"
    m2 = FDRLModel(spec, FDRLSettings(), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    u = FDRLModel(flowdsl.parse(vec_spec("fdrl(source=uniform)")), FDRLSettings(), seed=0)
    assert (
        u.kappa == 0
        and FDRLModel(flowdsl.parse(img_spec("fdrl(source=uniform)")), FDRLSettings(), 0).kappa == 10
        and {"scale.center", "scale.radius"} <= set(u.state_dict())
    )


# -- metrics ------------------------------------------------------------------------------------


def test_energy_and_frechet_distances():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(800, 2, generator=g, dtype=torch.float64)
    y = torch.randn(800, 2, generator=g, dtype=torch.float64)
    assert abs(energy_distance(x, y)) < 0.02
    assert energy_distance(x + 2.0, y) > 1.0
    # identical sets: U-statistic within-terms make E slightly negative, never large
    assert energy_distance(x, x) < 0
    # 1-D Gaussians: E = 2E|X-Y| - E|X-X'| - E|Y-Y'|; for N(0,1) vs N(mu,1) large n matches the formula
    mu = 1.0
    xs = torch.randn(6000, 1, generator=g, dtype=torch.float64)
    ys = torch.randn(6000, 1, generator=g, dtype=torch.float64) + mu
    sd = math.sqrt(2)
    exy = sd * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * sd**2)) + mu * (
        1 - 2 * 0.5 * math.erfc(mu / (sd * math.sqrt(2)))
    )
    exx = sd * math.sqrt(2 / math.pi)
    assert energy_distance(xs, ys) == pytest.approx(2 * exy - 2 * exx, abs=0.03)
    # Fréchet distance of Gaussians: |mu|^2 + tr(A + B - 2 (A B)^(1/2)) for commuting covariances
    fa = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    fb = torch.randn(20000, 3, generator=g, dtype=torch.float64) * 2 + torch.tensor(
        [1.0, 0.0, 0.0], dtype=torch.float64
    )
    assert frechet_distance(fa, fb) == pytest.approx(1.0 + 3 * (1 + 4 - 2 * 2), abs=0.1)
    assert frechet_distance(fa, fa) == pytest.approx(0.0, abs=1e-6)
