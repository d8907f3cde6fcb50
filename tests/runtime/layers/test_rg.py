"""RG-Flow (``rg``): lattice geometry, latent levels, exactness, causal cones, compile and export, the
kind's checks, and the bundled rg specs. Inpainting, receptive fields, mixing and the explain CLI are in
tests/runtime/explain/test_rg_explain.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import flowdsl
from flowdsl.compiler.kinds.rg import RGKind, body_labels
from flowdsl.runtime.bijector import Bijector, Chain
from flowdsl.runtime.explain.latents import randomise_parameters
from flowdsl.runtime.layers import layer_lowering
from flowdsl.runtime.layers._rg_lattice import (
    auto_levels,
    cone_mask,
    dependency_mask,
    latent_counts,
    latent_levels,
    make_plan,
    patch_pixels,
)
from flowdsl.runtime.layers.actnorm import ActNorm
from flowdsl.runtime.layers.rg import RGFlow

SPECS = Path(__file__).resolve().parents[3] / "specs"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the machines are shared; oversubscribed threads are 30× slower
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------
# test bodies: a checkerboard affine coupling with an MLP conditioner on a (C, K, K) patch
class PatchCoupling(Bijector):
    """y = m⊙x + m̄⊙(x·exp(s) + t), (s, t) = MLP(m⊙x); parameters random (not identity)."""

    def __init__(self, shape, parity: int, hidden: int = 16, seed: int = 0, scale: float = 0.5) -> None:
        super().__init__()
        C, K, _ = shape
        ij = torch.arange(K).view(K, 1) + torch.arange(K).view(1, K)
        self.register_buffer("mask", ((ij + parity) % 2 == 0).to(torch.float32).expand(C, K, K).clone())
        d = C * K * K
        g = torch.Generator().manual_seed(seed)
        self.l1 = nn.Linear(d, hidden)
        self.l2 = nn.Linear(hidden, 2 * d)
        with torch.no_grad():
            for p in (self.l1.weight, self.l1.bias, self.l2.weight, self.l2.bias):
                p.copy_(torch.randn(p.shape, generator=g) * scale)

    def _st(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(self.l1((x * self.mask).flatten(1)))
        s, t = self.l2(h).view(x.shape[0], 2, *x.shape[1:]).unbind(1)
        m̄ = 1 - self.mask
        return torch.tanh(s) * m̄, t * m̄

    def forward(self, x):
        s, t = self._st(x)
        return x * torch.exp(s) + t, s.flatten(1).sum(1)

    def inverse(self, y):
        s, t = self._st(y)  # the masked half is unchanged, so s and t are recomputed exactly
        return (y - t) * torch.exp(-s)


def random_actnorm(shape, seed, scale=0.3):
    a = ActNorm(shape)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        a.log_scale.copy_(torch.randn(shape[0], generator=g) * scale)
        a.bias.copy_(torch.randn(shape[0], generator=g))
    a.initialized.fill_(1)
    return a


def make_rg(C, L, K, levels=None, hidden=16, parts=("disentangler", "decimator"), scale=0.5):
    levels = levels or auto_levels(L, K)
    bodies = {}
    for i, (part, label) in enumerate(body_labels(levels)):
        if part in parts:
            shape = (C, K, K)
            bodies[label] = Chain(
                [
                    random_actnorm(shape, i, 0.6 * scale),
                    PatchCoupling(shape, 0, hidden, 2 * i, scale),
                    PatchCoupling(shape, 1, hidden, 2 * i + 1, scale),
                ]
            )
    return RGFlow((C, L, L), K, levels, bodies).eval()


def v2(n: int) -> float:
    if n == 0:
        return math.inf
    k = 0
    while n % 2 == 0:
        n //= 2
        k += 1
    return k


# --------------------------------------------------------------------------------------------
# geometry
@pytest.mark.parametrize(
    "L,K,expected",
    [(32, 4, [768, 192, 48, 16]), (8, 4, [48, 16]), (16, 2, [192, 48, 12, 4])],
    ids=["L32K4", "L8K4", "L16K2"],
)
def test_latent_counts_per_level(L, K, expected):
    H = auto_levels(L, K)
    assert H == len(expected)
    assert latent_counts(L, H) == expected
    C = 3
    plan = make_plan(C, L, K, H)
    assert [s // C for s in plan.latent_sizes] == expected
    lv = make_rg(C, L, K).latent_levels()
    assert lv.shape == (C, L, L) and lv.dtype == torch.long
    assert [int((lv[0] == h).sum()) for h in range(H)] == expected
    print(f"\nL={L} K={K}: latents per channel per level {expected}")


@pytest.mark.parametrize("L,K,levels", [(32, 4, 4), (16, 2, 4), (16, 4, 2)])
def test_latent_level_rule(L, K, levels):
    lv = latent_levels(L, levels)
    for y in range(L):
        for x in range(L):
            assert lv[y, x] == min(v2(y), v2(x), levels - 1)
    # the plan emits level h's latents exactly at the positions of level h
    plan = make_plan(1, L, K, levels)
    chunks = torch.split(plan.emit_order, list(plan.latent_sizes))
    for h, idx in enumerate(chunks):
        assert bool((lv.reshape(-1)[idx] == h).all())


@pytest.mark.parametrize("L,K", [(32, 4), (8, 4), (16, 2), (8, 8)])
def test_each_layer_is_an_exact_partition_of_the_current_lattice(L, K):
    for h in range(auto_levels(L, K)):
        s = 1 << h
        lattice = sorted(y * L + x for y in range(0, L, s) for x in range(0, L, s))
        for shifted in (True, False):
            pix = patch_pixels(L, K, h, shifted)
            assert pix.shape == ((L // (K * s)) ** 2, K, K)
            assert sorted(pix.reshape(-1).tolist()) == lattice  # exact partition: no gaps, no repeats
            y, x = pix // L, pix % L
            # dilation 2^h inside a patch (cyclically), origin offset K·2^h/2 when shifted
            assert bool((((y[:, 1:, :] - y[:, :-1, :]) % L) == s).all())
            assert bool((((x[:, :, 1:] - x[:, :, :-1]) % L) == s).all())
            o = (K * s) // 2 if shifted else 0
            assert bool(((y[:, 0, 0] - o) % (K * s) == 0).all())


# --------------------------------------------------------------------------------------------
# exactness
@pytest.mark.parametrize(
    "C,L,K,levels",
    [(2, 8, 2, None), (1, 8, 4, None), (3, 4, 4, None), (1, 16, 4, 1)],
    ids=["C2L8K2", "C1L8K4", "C3L4K4", "C1L16K4-truncated"],
)
def test_float64_round_trip_and_logdet_vs_autograd(C, L, K, levels):
    torch.manual_seed(0)
    m = make_rg(C, L, K, levels).double()
    x = torch.randn(3, C, L, L, dtype=torch.float64)
    z, ld = m(x)
    assert z.shape == x.shape and ld.shape == (3,)
    assert (z - x).abs().max() > 1e-2  # bodies are not the identity
    xr = m.inverse(z)
    assert torch.allclose(xr, x, atol=1e-12, rtol=0)
    for b in range(2):
        J = torch.autograd.functional.jacobian(lambda t: m(t.view(1, C, L, L))[0].reshape(-1), x[b].reshape(-1))
        ref = torch.linalg.slogdet(J)[1]
        assert abs(ld[b] - ref) <= 1e-10 * max(1.0, abs(ref))


def test_missing_part_is_identity():
    only_dec = make_rg(1, 8, 2, parts=("decimator",)).double()
    assert sum(isinstance(b, Chain) for b in only_dec.bodies) == 3
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    z, ld = only_dec(x)
    assert torch.allclose(only_dec.inverse(z), x, atol=1e-12)
    empty = RGFlow((1, 8, 8), 2, 3, {"level0.decimator": Chain([])})
    z, ld = empty(x)
    assert torch.equal(z, x) and torch.equal(ld, torch.zeros(2, dtype=torch.float64))


# --------------------------------------------------------------------------------------------
# causal cones
def test_latent_does_not_influence_pixels_outside_its_cone():
    C, L, K = 1, 16, 2
    m = make_rg(C, L, K).double()
    plan = m.plan()
    lv = m.latent_levels()[0]
    z = torch.randn(1, C, L, L, dtype=torch.float64)
    with torch.no_grad():
        x0 = m.inverse(z)
    sizes = []
    for h in range(m.levels):
        pos = torch.nonzero(lv == h)[len(torch.nonzero(lv == h)) // 2]
        y, xx = int(pos[0]), int(pos[1])
        point = torch.zeros(L, L, dtype=torch.bool)
        point[y, xx] = True
        cone = cone_mask(plan, point)[0]  # structural generation cone of latent (y, x)
        dz = torch.zeros_like(z)
        dz[0, 0, y, xx] = 0.5
        with torch.no_grad():
            diff = (m.inverse(z + dz) - x0)[0, 0].abs()
        assert bool((diff[~cone] == 0).all())  # bit-for-bit untouched outside the cone
        assert float(diff[cone].max()) > 0.0
        sizes.append(int(cone.sum()))
    # level 0: one aligned K×K patch meets four shifted K×K patches -> a 2K×2K box
    assert sizes[0] == (2 * K) ** 2
    assert sizes == sorted(sizes) and sizes[-1] == L * L
    print(f"\ncone sizes per level (L={L}, K={K}): {sizes}")


def test_jacobian_support_within_structural_cones():
    C, L, K = 1, 8, 2
    m = make_rg(C, L, K).double()
    z = torch.randn(C * L * L, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda t: m.inverse(t.view(1, C, L, L)).reshape(-1), z)  # ∂x/∂z
    plan = m.plan()
    nonzero = J.abs() > 0
    for i in range(L * L):
        point = torch.zeros(L * L, dtype=torch.bool)
        point[i] = True
        cone = cone_mask(plan, point.view(L, L)).reshape(-1)  # pixels latent i can move
        dep = dependency_mask(plan, point.view(L, L)).reshape(-1)  # latents pixel i moves
        assert not bool(nonzero[~cone, i].any())
        assert not bool(nonzero[i, ~dep].any())
        # duality: x_m in cone(z_i)  <=>  z_i in dep(x_m)
        for mpix in range(0, L * L, 7):
            e = torch.zeros(L * L, dtype=torch.bool)
            e[mpix] = True
            assert bool(cone[mpix]) == bool(dependency_mask(plan, e.view(L, L)).reshape(-1)[i])


# --------------------------------------------------------------------------------------------
# compile and export
def test_torch_compile_fullgraph():
    m = make_rg(2, 8, 2)
    x = torch.randn(4, 2, 8, 8)
    cf = torch.compile(m, fullgraph=True, backend="eager")
    z, ld = cf(x)
    z0, ld0 = m(x)
    assert torch.allclose(z, z0, atol=1e-6) and torch.allclose(ld, ld0, atol=1e-5)
    ci = torch.compile(m.inverse, fullgraph=True, backend="eager")
    assert torch.allclose(ci(z0), m.inverse(z0), atol=1e-6)


class _Inverse(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, z):
        return self.m.inverse(z)


def test_onnx_parity_forward_and_inverse(tmp_path):
    import onnxruntime as ort  # a runtime dependency

    C, L, K = 2, 8, 4
    m = make_rg(C, L, K, hidden=8, scale=0.25).frozen().eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    x = torch.randn(4, C, L, L)
    fwd, inv = tmp_path / "f.onnx", tmp_path / "i.onnx"
    torch.onnx.export(
        m,
        (x,),
        str(fwd),
        dynamo=True,
        opset_version=18,
        dynamic_shapes=({0: batch},),
        input_names=["x"],
        output_names=["z", "logdet"],
        verbose=False,
    )
    torch.onnx.export(
        _Inverse(m).eval(),
        (x,),
        str(inv),
        dynamo=True,
        opset_version=18,
        dynamic_shapes=({0: batch},),
        input_names=["z"],
        output_names=["x"],
        verbose=False,
    )
    sf = ort.InferenceSession(str(fwd), providers=["CPUExecutionProvider"])
    si = ort.InferenceSession(str(inv), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        xt = torch.randn(n, C, L, L)
        with torch.no_grad():
            z, ld = m(xt)
        zo, ldo = sf.run(None, {"x": xt.numpy()})
        dz, dld = abs(zo - z.numpy()).max(), abs(ldo - ld.numpy()).max()
        print(f"\nONNX batch {n}: |Δz| {dz:.2e} |Δlogdet| {dld:.2e}", end="")
        assert abs(zo - z.numpy()).max() <= 1e-4
        assert abs(ldo - ld.numpy()).max() <= 1e-4 * max(1.0, float(ld.abs().max()))
        (xo,) = si.run(None, {"z": z.detach().numpy()})
        print(f" |Δx| {abs(xo - xt.numpy()).max():.2e}", end="")
        assert abs(xo - xt.numpy()).max() <= 1e-4


# --------------------------------------------------------------------------------------------
# the kind's checks
class _Fail(Exception):
    pass


class _Ctx:
    def fail(self, message, arg=None):
        raise _Fail(message, arg)

    def warn(self, message, arg=None):
        pass


@pytest.mark.parametrize(
    "kwargs,shape,arg,fragment",
    [
        ({"kernel": 3}, (1, 12, 12), "kernel", "even"),
        ({"kernel": 0}, (1, 8, 8), "kernel", "even"),
        ({"kernel": 4}, (1, 24, 24), "kernel", "power of two"),
        ({"kernel": 16}, (1, 8, 8), "kernel", "does not divide"),
        ({"kernel": 4}, (1, 8, 16), None, "square"),
        ({"kernel": 4, "levels": 3}, (1, 8, 8), "levels", "between 1 and"),
        ({"kernel": 4, "levels": 0}, (1, 8, 8), "levels", "between 1 and"),
        ({"kernel": 4}, (64,), None, "image"),
    ],
)
def test_kind_rejects_bad_arguments_at_the_argument(kwargs, shape, arg, fragment):
    args = RGKind.Args(**kwargs)
    with pytest.raises(_Fail) as e:
        RGKind.infer_shape(args, shape, _Ctx())
    assert e.value.args[1] == arg and fragment in e.value.args[0]


def test_kind_body_instances_and_build():
    args = RGKind.Args(kernel=4)
    assert RGKind.infer_shape(args, (3, 32, 32), _Ctx()) == (3, 32, 32)
    inst = RGKind.body_instances(args, (3, 32, 32), _Ctx())
    assert [i.label for i in inst] == [f"level{h}.{p}" for h in range(4) for p in ("disentangler", "decimator")]
    assert {i.shape for i in inst} == {(3, 4, 4)} and [i.body for i in inst[:2]] == ["disentangler", "decimator"]
    assert len(RGKind.body_instances(RGKind.Args(kernel=4, levels=2), (3, 32, 32), _Ctx())) == 4
    m = layer_lowering("rg")(args, (3, 32, 32), {})
    assert isinstance(m, RGFlow) and m.levels == 4


# --------------------------------------------------------------------------------------------
# the bundled rg specs through the pipeline
def _digits_model(std=0.05, seed=0):
    m = flowdsl.compile(flowdsl.load(SPECS / "rgflow_digits.flow"), seed=seed)
    return randomise_parameters(m, std, seed).eval()


def test_digits_spec_round_trip_logdet_and_latent_scales():
    m = _digits_model().double()
    assert m.input_shape == (1, 8, 8)
    lv = m.latent_scales()
    assert [int((lv == h).sum()) for h in range(3)] == [48, 12, 4]
    assert torch.equal(lv[0], latent_levels(8, 3))
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    z, ld = m(x)
    assert torch.allclose(m.inverse(z), x, atol=1e-12, rtol=0)
    J = torch.autograd.functional.jacobian(lambda t: m(t.view(1, 1, 8, 8))[0].reshape(-1), x[0].reshape(-1))
    ref = torch.linalg.slogdet(J)[1]
    assert abs(ld[0] - ref) <= 1e-10 * max(1.0, abs(ref))
    by_level = m.latents_by_level(z)
    assert {k: v.shape[1] for k, v in by_level.items()} == {0: 48, 1: 12, 2: 4}


def test_cifar_spec_compiles_with_the_paper_lattice():
    spec = flowdsl.load(SPECS / "rgflow_cifar.flow")
    m = randomise_parameters(flowdsl.compile(spec), 0.02).eval().double()
    assert spec.prior.name == "laplace"
    lv = m.latent_scales()
    assert lv.shape == (3, 32, 32)
    assert [int((lv[c] == h).sum()) for c in range(3) for h in range(4)] == [768, 192, 48, 16] * 3
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    z, _ = m(x)
    assert torch.allclose(m.inverse(z), x, atol=1e-11, rtol=0)


def test_digits_spec_onnx_parity(tmp_path):
    from flowdsl.runtime.export.onnx import check_parity

    m = _digits_model()
    paths = flowdsl.export_onnx(m, tmp_path)
    res = check_parity(m.fuse(), *paths)
    print(
        f"\nrgflow_digits ONNX: z rel {res['z_rel']:.1e}, logdet rel {res['logdet_rel']:.1e}, "
        f"inverse rel {res['inverse_rel']:.1e}"
    )
    assert max(res["z_rel"], res["logdet_rel"], res["inverse_rel"], res["log_prob_rel"]) <= 1e-4


@pytest.mark.parametrize(
    "args,shape,col,fragment",
    [
        ("kernel=3", (8, 8), 13, "kernel must be even"),
        ("kernel=4, levels=3", (8, 8), 23, "levels must be between 1 and log2(L/K)+1 = 2"),
        ("kernel=4", (24, 24), 13, "power of two"),
        ("kernel=4", (8, 16), 3, "square"),
    ],
)
def test_checker_errors_are_located(args, shape, col, fragment):
    text = (
        "flow f {\n"
        f"  input image(channels=1, height={shape[0]}, width={shape[1]}, levels=17)\n"
        f"  rg({args}) {{\n"
        "    decimator { coupling(net=mlp, mask=checkerboard, hidden=8) }\n"
        "  }\n"
        "}\n"
    )
    with pytest.raises(flowdsl.CheckError) as e:
        flowdsl.parse(text)
    assert (e.value.line, e.value.column) == (3, col) and fragment in str(e.value)


def test_levels_below_auto_truncate_the_hierarchy():
    text = (
        "flow f {\n  input image(channels=1, height=16, width=16, levels=17)\n"
        "  rg(kernel=2, levels=2) { disentangler { actnorm } "
        "decimator { coupling(net=mlp, mask=checkerboard, hidden=8) } }\n}\n"
    )
    m = flowdsl.compile(flowdsl.parse(text))
    lv = m.latent_scales()[0]
    assert [int((lv == h).sum()) for h in range(2)] == [192, 64]  # the top keeps the whole 2-lattice
