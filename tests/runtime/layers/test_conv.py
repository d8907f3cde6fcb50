"""conv(kind=emerging|periodic): exact inverses, log-dets, dense Jacobians, frozen forms, ONNX.

Everything runs in float64 with parameters randomised away from the initialisation. The dense
matrices are built here independently of the layer code (explicit loops over taps and pixels).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowdsl.compiler.kinds import get_layer
from flowdsl.compiler.registry import CheckContext
from flowdsl.runtime.bijector import Provenance
from flowdsl.runtime.layers.emerging_conv import ARQuadrantSolver, EmergingConv, quadrant_offsets, tile_levels
from flowdsl.runtime.layers.periodic_conv import PeriodicConv

TOL = 1e-10


# --------------------------------------------------------------------------- helpers
def randomise(m: torch.nn.Module, scale: float, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))


def jac(m, x1: torch.Tensor) -> torch.Tensor:
    shape = x1.shape[1:]
    n = x1.numel()
    return torch.autograd.functional.jacobian(lambda v: m(v.reshape(1, *shape))[0].reshape(-1), x1.reshape(-1)).reshape(
        n, n
    )


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1.0))


def dense_quadrant(kernel: np.ndarray, h: int, w: int, direction: str) -> np.ndarray:
    """Matrix of a quadrant conv with zero padding; index (ch, i, j) -> ch·H·W + i·W + j.

    Output pixel (i, j) reads input (i+di, j+dj) for tap (a, b): the shift matrix
    eye(h, k=di) ⊗ eye(w, k=dj) (rows falling off the image are zero), times K[:, :, a, b]."""
    C, _, q, _ = kernel.shape
    c = q - 1
    M = np.zeros((C * h * w, C * h * w))
    for a in range(q):
        for b in range(q):
            di, dj = (a, b) if direction == "br" else (a - c, b - c)
            M += np.kron(kernel[:, :, a, b], np.kron(np.eye(h, k=di), np.eye(w, k=dj)))
    return M


def dense_emerging(m: EmergingConv) -> np.ndarray:
    C, H, W = m.shape
    k1, k2 = (k.detach().numpy() for k in m.kernels(torch.float64))
    # the masks by construction: K1 centre lower-triangular, K2 centre upper-triangular
    assert np.all(np.triu(k1[:, :, 0, 0], 1) == 0) and np.all(np.tril(k2[:, :, -1, -1], -1) == 0)
    return dense_quadrant(k2, H, W, "tl") @ dense_quadrant(k1, H, W, "br")


def dense_periodic(weight: np.ndarray, h: int, w: int) -> np.ndarray:
    """Output (i, j) reads input ((i+a−c) mod H, (j+b−c) mod W): circulant shifts (summed, so
    taps that coincide modulo the size would add up)."""
    C, _, k, _ = weight.shape
    c = (k - 1) // 2
    M = np.zeros((C * h * w, C * h * w))
    for a in range(k):
        for b in range(k):
            sh = np.roll(np.eye(h), a - c, axis=1)  # sh[i, (i + a − c) mod h] = 1
            sw = np.roll(np.eye(w), b - c, axis=1)
            M += np.kron(weight[:, :, a, b], np.kron(sh, sw))
    return M


def check_layer(m, x: torch.Tensor, dense: np.ndarray) -> None:
    with torch.no_grad():
        y, ld = m(x)
        xr = m.inverse(y)
    assert ld.shape == (x.shape[0],) and ld.dtype == x.dtype
    assert rel(xr, x) <= TOL
    J = jac(m, x[:1])
    assert np.allclose(J.numpy(), dense, rtol=0, atol=1e-12 * max(1.0, np.abs(dense).max()))
    ref = torch.linalg.slogdet(J)[1]
    assert float((ld[0] - ref).abs() / ref.abs().clamp_min(1.0)) <= TOL
    assert torch.equal(ld, ld[:1].expand_as(ld))  # input-independent
    fz = m.frozen()
    with torch.no_grad():
        y2, ld2 = fz(x)
        assert rel(y2, y) <= TOL and rel(ld2, ld) <= TOL
        assert rel(fz.inverse(y), x) <= TOL


# --------------------------------------------------------------------------- emerging
@settings(max_examples=14)
@given(
    c=st.integers(1, 3),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    k=st.sampled_from([1, 3, 5]),
    tile=st.sampled_from([None, (1, 1), (2, 2), (2, 3), (4, 4)]),
)
def test_emerging_exact_dense_jacobian_and_inverse(c, h, w, k, tile):
    if (k + 1) // 2 > min(h, w):
        k = 1
    m = EmergingConv((c, h, w), k, tile).double()
    randomise(m, 0.3)
    x = torch.randn(3, c, h, w, dtype=torch.float64)
    check_layer(m, x, dense_emerging(m))


def _far_from_identity(seed: int, spatial: float, C: int = 3, H: int = 12, W: int = 12) -> EmergingConv:
    """Centre taps with N(0, 1) channel mixing, diagonals of both signs with |d| ∈ [0.5, 2],
    spatial taps N(0, spatial²): ‖M − I‖₂ ≈ 4…20."""
    torch.manual_seed(seed)
    m = EmergingConv((C, H, W), 3).double()
    with torch.no_grad():
        m.w1.normal_(0, spatial)
        m.w2.normal_(0, spatial)
        m.w1[:, :, 0, 0].normal_(0, 1.0)
        m.w2[:, :, 1, 1].normal_(0, 1.0)
        m.log_d1.uniform_(-0.7, 0.7)
        m.log_d2.uniform_(-0.7, 0.7)
        m.sign1.copy_(torch.tensor([1.0, -1.0, 1.0][:C]))
        m.sign2.copy_(torch.tensor([-1.0, 1.0, 1.0][:C]))
    return m


@pytest.mark.parametrize("seed,spatial", [(0, 0.1), (1, 0.2), (1, 0.3), (5, 1.0)])
def test_emerging_far_from_identity_is_numerically_sound(seed, spatial):
    """Weights far from the identity. The forward error of the inverse stays within the
    conditioning bound (≤ 50·cond(M)·eps) in float64 and in the float32 frozen form; the float64
    inverse is backward stable (‖M x̃ − y‖ ≤ 1e-13 ‖M‖ ‖x̃‖) even when M is so ill-conditioned
    (spatial taps N(0, 1): cond ~3e17) that no solver can recover x, and the float32 solve
    stays finite there (tiles that are not solved yet are exactly 0, never growing garbage)."""
    m = _far_from_identity(seed, spatial)
    M = dense_emerging(m)
    cond = np.linalg.cond(M)
    assert np.linalg.norm(M - np.eye(len(M)), 2) > 3.0
    x = torch.randn(2, *m.shape, dtype=torch.float64)
    with torch.no_grad():
        y, _ = m(x)
        x64 = m.inverse(y)
        x32 = m.float().frozen().inverse(y.float()).double()
    m.double()
    err = lambda a: float((a - x).abs().max() / x.abs().max())  # noqa: E731
    if cond < 1e10:
        assert err(x64) <= 50 * cond * 2.2e-16
        assert err(x32) <= 50 * cond * 1.2e-7
    xt = x64[0].reshape(-1).numpy()
    backward = np.abs(M @ xt - y[0].reshape(-1).numpy()).max() / (np.abs(M).sum(1).max() * np.abs(xt).max())
    assert backward <= 1e-13
    assert torch.isfinite(x32).all()


def test_emerging_step_counts_match_the_docs():
    got = {s: EmergingConv((3, s, s), 3).steps() for s in (8, 32, 64)}
    assert {s: g["steps"] for s, g in got.items()} == {8: 2, 32: 30, 64: 62}
    assert {s: g["tile"] for s, g in got.items()} == {8: (8, 8), 32: (4, 4), 64: (4, 4)}
    assert {s: g["pixel_wavefront_steps"] for s, g in got.items()} == {8: 30, 32: 126, 64: 254}
    assert EmergingConv((12, 16, 16), 3).steps()["levels_per_conv"] == (15, 15)
    assert EmergingConv((3, 32, 32), 3, tile=(8, 8)).steps()["steps"] == 14


@pytest.mark.parametrize("k", [3, 5, 7])
def test_tile_levels_is_the_dependency_depth(k):
    """With 1×1 tiles the level count is the longest path of the mask's pixel DAG: H+W−1 for a
    quadrant mask; brute force over the pixel graph agrees."""
    h, w = 5, 7
    for direction in ("br", "tl"):
        offs = quadrant_offsets(k, direction)
        lev = tile_levels(offs, 1, 1, h, w)
        # brute-force longest path (memoised DFS)
        memo: dict = {}

        def depth(i, j):
            if (i, j) not in memo:
                deps = [(i + a, j + b) for a, b in offs if 0 <= i + a < h and 0 <= j + b < w]
                memo[(i, j)] = 1 + max((depth(*d) for d in deps), default=-1)
            return memo[(i, j)]

        assert all(lev[i, j] == depth(i, j) for i in range(h) for j in range(w))
        assert lev.max() + 1 == h + w - 1
        assert ARQuadrantSolver(1, h, w, k, direction, (1, 1)).n_levels == h + w - 1


def test_emerging_state_dict_and_dtype_device():
    a = EmergingConv((2, 5, 6), 3)
    b = EmergingConv((2, 5, 6), 3)
    randomise(a, 0.2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 2, 5, 6)
    assert torch.equal(a(x)[0], b(x)[0])
    assert a(x)[0].dtype == torch.float32 and a.inverse(x).dtype == torch.float32


def test_emerging_operator_cache_follows_parameter_updates():
    """Without autograd the inverse caches D⁻¹ and G; in-place updates and loads invalidate it."""
    m = EmergingConv((2, 5, 6), 3).double()
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64)
    other = EmergingConv((2, 5, 6), 3).double()
    randomise(other, 0.2, seed=4)
    with torch.no_grad():
        for step in range(3):
            y = m(x)[0]
            assert rel(m.inverse(y), x) <= TOL
            assert rel(m.inverse(y), x) <= TOL  # second call: from the cache
            m.w1.add_(0.1)
            m.log_d2.sub_(0.05)
        m.load_state_dict(other.state_dict())
        assert rel(m.inverse(m(x)[0]), x) <= TOL
        m.float()
        assert rel(m.inverse(m(x.float())[0]).double(), x) <= 1e-5
    y = m(x.float())[0]
    assert m.inverse(y).dtype == torch.float32


def test_emerging_export_layout_matches(monkeypatch):
    """The batch-last schedule used while exporting gives the same inverse as the eager one."""
    import flowdsl.runtime.layers._emerging_solver as ec

    for shape, tile in (((3, 7, 6), (4, 4)), ((2, 5, 5), None), ((2, 6, 9), (2, 2))):
        m = EmergingConv(shape, 3, tile).double()
        randomise(m, 0.2)
        fz = m.frozen()
        y = torch.randn(3, *shape, dtype=torch.float64)
        with torch.no_grad():
            ref = fz.inverse(y)
            monkeypatch.setattr(ec, "_exporting", lambda: True)
            got, got_train = fz.inverse(y), m.inverse(y)
            monkeypatch.setattr(ec, "_exporting", lambda: False)
        assert rel(got, ref) <= 1e-13 and rel(got_train, ref) <= 1e-12


# --------------------------------------------------------------------------- periodic
@pytest.mark.parametrize("h,w", [(4, 4), (5, 5), (4, 5), (5, 4), (3, 6)])
def test_periodic_even_odd_sizes(h, w):
    m = PeriodicConv((2, h, w), 3).double()
    randomise(m, 0.3, seed=h * 10 + w)
    x = torch.randn(3, 2, h, w, dtype=torch.float64)
    check_layer(m, x, dense_periodic(m.weight.detach().numpy(), h, w))


@settings(max_examples=10)
@given(c=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7), k=st.sampled_from([1, 2, 3, 4, 5]))
def test_periodic_exact_dense_jacobian_and_inverse(c, h, w, k):
    if k > min(h, w):
        k = 1
    m = PeriodicConv((c, h, w), k).double()
    randomise(m, 0.3)
    x = torch.randn(2, c, h, w, dtype=torch.float64)
    check_layer(m, x, dense_periodic(m.weight.detach().numpy(), h, w))


def test_periodic_singular_kernel_is_reported_with_the_layer():
    m = PeriodicConv((2, 4, 4), 3).double()
    with torch.no_grad():
        m.weight.zero_()
        m.weight[0, 0, 1, 1] = 1.0  # channel 1 is never reached: det K̂ = 0 everywhere
    m.provenance = Provenance("n7", 12)
    with pytest.raises(ValueError, match=r"n7 \(line 12\).*singular"):
        m.frozen()


# --------------------------------------------------------------------------- periodic, even kernels
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("shape", [(2, 8, 8), (3, 4, 6)])
def test_periodic_even_kernels(shape, k):
    """Taps at offsets −(k−1)//2 … k//2: round trip, log-det vs the autograd Jacobian (≤ 1e-10),
    the dense matrix built tap by tap, and the frozen form agreeing with the training form (≤ 1e-12)."""
    m = PeriodicConv(shape, k).double()
    assert (m.lo, m.hi) == ((k - 1) // 2, k // 2)
    randomise(m, 0.3, seed=k)
    x = torch.randn(3, *shape, dtype=torch.float64)
    check_layer(m, x, dense_periodic(m.weight.detach().numpy(), shape[1], shape[2]))
    fz = m.frozen()
    with torch.no_grad():
        y, ld = m(x)
        y2, ld2 = fz(x)
        assert rel(y2, y) <= 1e-12 and rel(ld2, ld) <= 1e-12
        assert rel(fz.inverse(y), m.inverse(y)) <= 1e-12
        # PyTorch's padding='same' convention (left pad (k−1)//2, right pad k//2), circular
        ref = torch.nn.functional.conv2d(
            torch.nn.functional.pad(x, (m.lo, m.hi, m.lo, m.hi), mode="circular"), m.weight
        )
        assert rel(y, ref) <= 1e-14
        same = torch.nn.Conv2d(shape[0], shape[0], k, padding="same", padding_mode="circular", bias=False).double()
        same.weight.copy_(m.weight)
        assert rel(y, same(x)) <= 1e-14


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_periodic_init_tap_is_offset_zero(k):
    """The orthogonal matrix sits on the tap at offset (0, 0), index (lo, lo): with only that tap
    the layer is that channel matrix at every pixel (no shift), for odd and even k."""
    m = PeriodicConv((2, 4, 5), k).double()
    lo = (k - 1) // 2
    with torch.no_grad():
        w0 = m.weight[:, :, lo, lo].clone()
        m.weight.zero_()
        m.weight[:, :, lo, lo] = w0
        x = torch.randn(2, 2, 4, 5, dtype=torch.float64)
        y, _ = m(x)
    assert rel(y, torch.einsum("oc,bchw->bohw", w0, x)) <= 1e-14
    assert torch.allclose(w0 @ w0.T, torch.eye(2, dtype=torch.float64), atol=0.2)  # near-orthogonal (+ N(0, 0.02²))


def test_periodic_kernel2_spec_compiles_roundtrips_fuses_and_exports(tmp_path):
    from flowtest import check_invertible, compiled

    import flowdsl
    from flowdsl.runtime.export.onnx import check_parity

    text = "flow t {\n  input image(channels=2, height=4, width=4)\n  actnorm\n  conv(kind=periodic, kernel=2)\n}\n"
    model, x = compiled(text, batch=3)
    check_invertible(model, x, tol=1e-10)
    fused = model.fuse()
    with torch.no_grad():
        z, ld = model(x)
        z2, ld2 = fused(x)
        assert rel(z2, z) <= 1e-12 and rel(ld2, ld) <= 1e-12
        assert rel(fused.inverse(z), x) <= 1e-10
    fwd, inv = flowdsl.export_onnx(model.float(), tmp_path)
    res = check_parity(model.fuse(), fwd, inv, batch=5)
    for key in ("z_rel", "logdet_rel", "log_prob_rel", "inverse_rel"):
        assert res[key] <= 1e-4, (key, res)


@pytest.mark.parametrize(
    "layer,needle",
    [
        ("conv(kind=periodic, kernel=5)", "a periodic kernel must be at most 4"),
        (
            "conv(kind=emerging, kernel=2)",
            "conv(kind=emerging) needs an odd kernel (its two masked halves share the centre tap), got 2; use 1 or 3",
        ),
    ],
)
def test_spec_rejects_bad_kernels_at_the_kernel_argument(layer, needle):
    import flowdsl

    line = "  " + layer
    text = "flow t {\n  input image(channels=2, height=4, width=4)\n" + line + "\n}\n"
    with pytest.raises(flowdsl.FlowDSLError) as info:
        flowdsl.compile(flowdsl.parse(text, filename="bad.flow"))
    e = info.value
    assert (e.line, e.column) == (3, line.index("kernel=") + len("kernel=") + 1), str(e)
    assert needle in str(e)


def test_onnx_periodic_even_kernel(tmp_path):
    m = PeriodicConv((2, 5, 6), 4)
    randomise(m, 0.05)
    onnx_roundtrip(m, (2, 5, 6), tmp_path)


# --------------------------------------------------------------------------- checker
class _Fail(Exception):
    def __init__(self, message, arg):
        super().__init__(message)
        self.arg = arg


def _ctx():
    def fail(message, arg):
        raise _Fail(message, arg)

    return CheckContext(fail, lambda message, arg: None)


@pytest.mark.parametrize(
    "kind,kernel,shape,needle",
    [
        ("emerging", 4, (3, 8, 8), "odd"),
        ("emerging", 2, (3, 8, 8), "conv(kind=emerging) needs an odd kernel"),
        ("emerging", 2, (3, 8, 8), "kind=periodic, which takes even kernels"),
        ("periodic", 5, (3, 4, 8), "height is 4"),
        ("periodic", 5, (3, 8, 3), "width is 3"),
        ("emerging", 7, (3, 3, 8), "height is 3"),
        ("emerging", 9, (3, 8, 4), "width is 4"),
    ],
)
def test_checker_rejects_bad_kernels(kind, kernel, shape, needle):
    K = get_layer("conv")
    with pytest.raises(_Fail) as e:
        K.infer_shape(K.Args(kind=kind, kernel=kernel), shape, _ctx())
    assert e.value.arg == "kernel" and needle in str(e.value)


def test_checker_accepts_and_rejects_shapes():
    K = get_layer("conv")
    assert K.spatial and K.constant_logdet
    assert K.infer_shape(K.Args(), (3, 4, 4), _ctx()) == (3, 4, 4)
    assert K.infer_shape(K.Args(kind="emerging", kernel=5), (3, 4, 6), _ctx()) == (3, 4, 6)
    assert K.infer_shape(K.Args(kind="periodic", kernel=3), (3, 3, 3), _ctx()) == (3, 3, 3)
    for k in (1, 2, 3, 4):  # periodic: odd or even, up to min(H, W)
        assert K.infer_shape(K.Args(kind="periodic", kernel=k), (3, 4, 6), _ctx()) == (3, 4, 6)
    with pytest.raises(_Fail):
        K.infer_shape(K.Args(), (12,), _ctx())
    with pytest.raises(Exception):
        K.Args(kernel=0)
    assert K.Args().kind == "emerging" and K.Args().kernel == 3


# --------------------------------------------------------------------------- ONNX
class _Both(torch.nn.Module):
    """Forward and inverse of a frozen layer in one graph (one export per layer)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, y):
        z, ld = self.layer(x)
        return z, ld, self.layer.inverse(y)


def onnx_roundtrip(layer, shape, tmp_path, batch_export=4, batch_run=7):
    import onnxruntime as ort

    fz = _Both(layer.frozen().float().eval()).eval()
    gen = torch.Generator().manual_seed(1)
    ex = (torch.randn(batch_export, *shape, generator=gen), torch.randn(batch_export, *shape, generator=gen))
    b = torch.export.Dim("batch")
    prog = torch.onnx.export(fz, ex, dynamo=True, opset_version=18, dynamic_shapes=({0: b}, {0: b}), verbose=False)
    path = tmp_path / "layer.onnx"
    prog.save(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(batch_run, *shape, generator=gen)
    with torch.no_grad():
        y = layer.float()(x)[0]  # a y in the range of the layer
        ref = fz(x, y)
    names = [i.name for i in sess.get_inputs()]
    out = sess.run(None, {names[0]: x.numpy(), names[1]: y.numpy()})
    for o, r in zip(out, ref):
        assert o.shape == tuple(r.shape)
        err = float(np.abs(o - r.numpy()).max() / max(1.0, float(r.abs().max())))
        assert err <= 1e-4, err
    assert float(np.abs(out[2] - x.numpy()).max()) <= 1e-4  # and it really inverts


def test_onnx_emerging_forward_and_inverse(tmp_path):
    m = EmergingConv((2, 7, 6), 3, tile=(4, 4))  # 2×2 tiles, ragged edges, 3 levels per conv
    randomise(m, 0.05)
    onnx_roundtrip(m, (2, 7, 6), tmp_path)


def test_onnx_periodic_forward_and_inverse(tmp_path):
    m = PeriodicConv((2, 6, 5), 3)
    randomise(m, 0.05)
    onnx_roundtrip(m, (2, 6, 5), tmp_path)
