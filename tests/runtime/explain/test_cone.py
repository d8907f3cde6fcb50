"""Incremental (cone-only) generation for RG-Flow inpainting: exact against the whole generator,
gradients to the free latents only, O(log L) patches per step, and ``inpaint`` using it."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowdsl
from flowdsl.runtime.explain.cone import ConeGenerator, dilate
from flowdsl.runtime.explain.inpaint import inpaint, touched_latents
from flowdsl.runtime.explain.latents import randomise_parameters
from flowdsl.runtime.layers._rg_cone import make_cone
from flowdsl.runtime.layers._rg_lattice import auto_levels, make_plan


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(L: int, K: int, C: int = 1, levels="auto", std: float = 0.3, seed: int = 0, dtype=torch.float64):
    """An rg model with pointwise steps on both sides (actnorm, conv1x1, permute) and random weights."""
    body = "actnorm coupling(kind=affine, net=mlp, mask=checkerboard, hidden=8)"
    mix = "conv1x1\n  permute(kind=reverse)\n" if C > 1 else ""
    text = (
        f"flow t {{\n  input image(channels={C}, height={L}, width={L}, levels=256)\n"
        f"  actnorm\n  {mix}"
        f"  rg(kernel={K}, levels={levels}) {{\n    disentangler {{ {body} }}\n    decimator {{ {body} }}\n  }}\n"
        f"  actnorm\n  {mix}"
        f"  prior laplace(scale=0.7071)\n}}\n"
    )
    m = flowdsl.compile(flowdsl.parse(text), seed=seed).to(dtype)
    return randomise_parameters(m, std, seed).eval()


@st.composite
def _cases(draw):
    K = draw(st.sampled_from([2, 4]))
    L = K * draw(st.sampled_from([2, 4, 8]))
    C = draw(st.sampled_from([1, 2]))
    H = auto_levels(L, K)
    levels = draw(st.integers(1, H))
    n_holes = draw(st.integers(1, 4))
    pix = draw(st.lists(st.integers(0, L * L - 1), min_size=n_holes, max_size=n_holes))
    context = draw(st.integers(0, 3))
    seed = draw(st.integers(0, 2**16))
    return K, L, C, levels, pix, context, seed


@settings(max_examples=25, deadline=None)
@given(_cases())
def test_incremental_generation_equals_the_whole_generator(case):
    K, L, C, levels, pix, context, seed = case
    m = _model(L, K, C, levels, seed=seed)
    mask = torch.zeros(L * L, dtype=torch.bool)
    mask[torch.tensor(pix)] = True
    mask = mask.view(L, L)
    gen = ConeGenerator(m, mask, context)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, C, L, L, generator=g, dtype=torch.float64)
    torch.set_grad_enabled(False)
    try:
        _check_exact(m, gen, mask, z, g, context)
    finally:
        torch.set_grad_enabled(True)


def _check_exact(m, gen, mask, z, g, context):
    L = mask.shape[0]
    # the free latents are exactly the touched ones; the window holds the hole and its context ring
    free = torch.zeros(L * L, dtype=torch.bool)
    free[gen.latents] = True
    assert torch.equal(free.view(L, L), touched_latents(m, mask)[0])
    win = torch.zeros(L * L, dtype=torch.bool)
    win[gen.pixels] = True
    assert bool((win | ~dilate(mask, context).view(-1)).all())
    # exact against the whole generator, at z and after changing only the free latents
    ref = gen.window(m.inverse(z))
    assert (gen.generate(gen.gather(z), z) - ref).abs().max() <= 1e-12
    zf = gen.gather(z) + torch.randn(gen.gather(z).shape, generator=g, dtype=torch.float64)
    ref = gen.window(m.inverse(gen.scatter(z, zf)))
    assert (gen.generate(zf, z) - ref).abs().max() <= 1e-12
    # the log-prior over the free latents differs from the full one by a constant in z_F
    d1 = gen.log_prior(zf, z) - m.prior.log_prob(gen.scatter(z, zf))
    d0 = gen.log_prior(gen.gather(z), z) - m.prior.log_prob(z)
    assert torch.allclose(d1, d0, atol=1e-9, rtol=0)


def test_gradients_reach_the_free_latents_only():
    L, K = 16, 4
    m = _model(L, K, C=2)
    mask = torch.zeros(L, L, dtype=torch.bool)
    mask[5:8, 9:11] = True
    gen = ConeGenerator(m, mask)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(1, 2, L, L, generator=g, dtype=torch.float64)
    target = torch.rand(1, 2, L, L, generator=g, dtype=torch.float64)
    w = torch.rand(1, 2, L, L, generator=g, dtype=torch.float64)
    zf = gen.gather(z).requires_grad_(True)
    e = ((gen.generate(zf, z) - gen.window(target)) ** 2 * gen.window(w)).sum()
    (g_inc,) = torch.autograd.grad(e, zf)
    zfull = z.clone().requires_grad_(True)  # reference: the same windowed energy through the whole generator
    e_ref = ((gen.window(m.inverse(zfull)) - gen.window(target)) ** 2 * gen.window(w)).sum()
    (g_ref,) = torch.autograd.grad(e_ref, zfull)
    assert torch.allclose(g_inc, gen.gather(g_ref), atol=1e-10, rtol=1e-10)
    assert float(g_inc.abs().max()) > 0
    assert all(p.grad is None for p in m.parameters())


def test_patches_recomputed_per_step_grow_like_log_L():
    K, hole = 4, 4
    rows = []
    for L in (8, 16, 32, 64, 128):
        mask = torch.zeros(L, L, dtype=torch.bool)
        c = L // 2 - hole // 2
        mask[c : c + hole, c : c + hole] = True
        plan = make_plan(1, L, K, auto_levels(L, K))
        cone = make_cone(plan, dilate(mask, K))
        rows.append((L, sum(cone.patches), sum(lp.patches for lp in plan.layers), cone.patches))
    # bounded per layer, so the total grows linearly in the number of levels = log2(L/K) + 1
    assert max(max(r[3]) for r in rows) <= 16
    inc = [b[1] - a[1] for a, b in zip(rows, rows[1:])]
    assert len(set(inc[1:])) == 1 and inc[-1] > 0  # the same number of patches per extra level
    assert rows[-1][1] < 0.05 * rows[-1][2]  # against L²/K²-ish for the whole generator
    print("\n" + "\n".join(f"L={L:4d} cone {c:4d} / all {a:5d} per layer {p}" for L, c, a, p in rows))


def test_cone_inpainting_steps_run_only_the_cone_patches():
    L = 32
    m = _model(L, 4, std=0.05, dtype=torch.float32)
    rg = m.steps[1]
    rows = []
    for body in rg.bodies:
        inv = body.inverse
        body.inverse = lambda u, inv=inv: (rows.append(u.shape[0]), inv(u))[1]
    x = torch.rand(1, 1, L, L, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(L, L, dtype=torch.bool)
    mask[14:18, 14:18] = True
    steps = 3
    res = inpaint(m, x, mask, steps=steps, region="cone")
    full = sum(rg._patches)
    cone = ConeGenerator(m, mask).patches_per_step
    assert res.incremental and res.patches_per_step == cone < full // 2
    assert sum(rows) == steps * cone + full  # the steps, then one whole G(z*) for the result
    # the completion on the hole is the cone's output, and only the touched latents moved
    touched = touched_latents(m, mask)
    z0, _ = m(torch.where(mask, torch.full_like(x, float(x[0][:, ~mask].mean())), x))
    assert torch.equal(res.z[0][~touched], z0[0][~touched])
    assert torch.equal(res.x[0][:, ~mask], x[0][:, ~mask])
    rows.clear()
    res_all = inpaint(m, x, mask, steps=steps, region="all")
    assert not res_all.incremental and sum(rows) == (steps + 1) * full


def test_cone_generator_rejects_bad_input():
    m = _model(8, 4)
    with pytest.raises(ValueError, match="no pixel"):
        ConeGenerator(m, torch.zeros(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="region"):
        inpaint(m, torch.rand(1, 8, 8), torch.ones(8, 8, dtype=torch.bool), steps=1, region="some")


# --------------------------------------------------------------------------------------------
# the --inpaint picture: an image whose hole shows, and a legend for the level colours
def test_picture_picks_a_visible_hole():
    from flowdsl.runtime.explain.inpaint import hole_visibility

    L = 8
    mask = torch.zeros(L, L, dtype=torch.bool)
    mask[3:5, 3:5] = True
    flat = torch.full((1, L, L), 0.3)  # the hole equals the fill: invisible
    edge = torch.full((1, L, L), 0.3)
    edge[:, 3:5, 4:] = 0.9  # an edge runs through the hole
    dark = torch.full((1, L, L), 0.3)
    dark[:, 4, 4] = 0.0
    vis = hole_visibility(torch.stack([flat, dark, edge]), mask)
    assert float(vis[0]) == 0.0 and int(torch.argmax(vis)) == 2
    known = ~mask
    fill = edge[0][known].mean()
    assert torch.isclose(vis[2], ((edge[0][mask] - fill) ** 2).mean().sqrt())


def test_inpaint_picture_has_a_level_colour_bar(tmp_path, monkeypatch):
    from flowdsl.runtime.explain import plots

    figs = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda plt, fig, path: (figs.append(fig), save(plt, fig, path))[1])
    m = _model(8, 2, std=0.05, dtype=torch.float32)
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[3:5, 3:5] = True
    res = {r: inpaint(m, x, mask, steps=2, region=r) for r in ("cone", "all")}
    plots.plot_inpainting(x, mask, res, m.latent_scales(), tmp_path / "p.png")
    (fig,) = figs
    bars = [a for a in fig.axes if a.get_ylabel().startswith("RG level")]
    assert len(bars) == 1
    assert [int(round(t)) for t in bars[0].get_yticks()] == [0, 1, 2]  # one tick per level (3 for L=8, K=2)
    assert (tmp_path / "p.png").stat().st_size > 5000


def test_cone_generation_compiles_without_graph_breaks():
    L = 8
    m = _model(L, 4, C=2, dtype=torch.float32)
    mask = torch.zeros(L, L, dtype=torch.bool)
    mask[1:3, 5:6] = True
    gen = ConeGenerator(m, mask)
    z = torch.randn(2, 2, L, L, generator=torch.Generator().manual_seed(1))
    step = torch.compile(lambda zf, z: gen.generate(zf, z), fullgraph=True, backend="eager")
    with torch.no_grad():
        assert torch.allclose(step(gen.gather(z), z), gen.window(m.inverse(z)), atol=1e-5)
