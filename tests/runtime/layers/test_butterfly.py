"""butterfly(depth, over): dense matrix, closed-form inverse, log-det, frozen forms, checker, ONNX.

float64, parameters randomised away from the initialisation. The reference matrix is built here
from the definition (ButterflyFlow, Meng et al., arXiv 2209.13774): level ℓ mixes j and j + n/2^(ℓ+1) inside blocks of
n/2^ℓ with its own 2×2 matrix, levels applied in the order 0, 1, …; the layer's Jacobian is that
n×n matrix placed on the mixed axis (a Kronecker product with identities).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowdsl.compiler.kinds import get_layer
from flowdsl.compiler.registry import CheckContext
from flowdsl.runtime.bijector import Provenance
from flowdsl.runtime.layers.butterfly import DENSE_MAX, Butterfly, max_depth

TOL = 1e-10


def randomise(m, scale=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))


def reference_matrix(weight: np.ndarray, n: int) -> np.ndarray:
    """Product of the level matrices from the definition; weight (depth, 4, n/2)."""
    M = np.eye(n)
    for lv in range(weight.shape[0]):
        L = np.zeros((n, n))
        size = n // 2**lv
        half = size // 2
        p = 0
        for blk in range(2**lv):
            for j in range(half):
                i0 = blk * size + j
                i1 = i0 + half
                a, b, c, d = weight[lv, :, p]
                L[i0, i0], L[i0, i1], L[i1, i0], L[i1, i1] = a, b, c, d
                p += 1
        M = L @ M
    return M


def reference_pairs(weight: np.ndarray) -> np.ndarray:
    """A, B, C, D from the parameters (θ, α, β, δ): R(θ)·[[e^α, β], [0, e^δ]], per pair."""
    out = np.zeros_like(weight)
    for lv in range(weight.shape[0]):
        for p in range(weight.shape[2]):
            th, al, be, de = weight[lv, :, p]
            rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
            mat = rot @ np.array([[np.exp(al), be], [0.0, np.exp(de)]])
            out[lv, :, p] = mat.reshape(-1)
    return out


def full_jacobian(M: np.ndarray, shape: tuple[int, ...], over: str) -> np.ndarray:
    if over == "all" or len(shape) == 1:
        return M
    C, H, W = shape
    if over == "channels":
        return np.kron(M, np.eye(H * W))
    if over == "height":
        return np.kron(np.kron(np.eye(C), M), np.eye(W))
    return np.kron(np.eye(C * H), M)


def check(shape, over, depth, seed=0):
    m = Butterfly(shape, depth, over).double()
    randomise(m, 0.3, seed)
    x = torch.randn(3, *shape, dtype=torch.float64)
    n = math.prod(shape)
    with torch.no_grad():
        y, ld = m(x)
        xr = m.inverse(y)
    assert y.shape == x.shape and ld.shape == (3,) and torch.equal(ld, ld[:1].expand(3))
    assert float((xr - x).abs().max() / x.abs().max()) <= TOL
    J = torch.autograd.functional.jacobian(lambda v: m(v.reshape(1, *shape))[0].reshape(-1), x[0].reshape(-1)).reshape(
        n, n
    )
    M = reference_matrix(reference_pairs(m.weight.detach().numpy()), m.layout.n)
    ref_full = full_jacobian(M, shape, over)
    assert np.allclose(J.numpy(), ref_full, rtol=0, atol=1e-13)
    assert np.allclose(m.matrix().numpy(), M, rtol=0, atol=1e-13)
    assert np.allclose(m.matrix(inverse=True).numpy() @ M, np.eye(len(M)), atol=1e-10)
    sl = torch.linalg.slogdet(J)[1]
    assert float((ld[0] - sl).abs() / sl.abs().clamp_min(1.0)) <= TOL
    fz = m.frozen()
    with torch.no_grad():
        y2, ld2 = fz(x)
        assert float((y2 - y).abs().max()) <= 1e-12 and float((ld2 - ld).abs().max()) <= 1e-12
        assert float((fz.inverse(y) - x).abs().max() / x.abs().max()) <= TOL
    return m


@pytest.mark.parametrize(
    "shape,over,depth",
    [
        ((3, 4, 4), "all", 4),
        ((8, 2, 3), "channels", 3),
        ((2, 3, 8), "width", 3),
        ((2, 8, 3), "height", 2),
        ((12,), "all", 2),
        ((8,), "channels", 3),
        ((2, 8, 16), "all", 8),  # n = 256 > DENSE_MAX: the level-wise frozen form
        ((3, 3, 3), "all", 0),  # odd n: depth 0 is the identity
    ],
)
def test_butterfly_cases(shape, over, depth):
    m = check(shape, over, depth)
    assert m.frozen().dense == (m.layout.n <= DENSE_MAX)


@settings(max_examples=20)
@given(
    c=st.sampled_from([1, 2, 3, 4, 6, 8]),
    h=st.sampled_from([1, 2, 3, 4, 8]),
    w=st.sampled_from([1, 2, 4, 6]),
    over=st.sampled_from(["all", "channels", "width", "height"]),
    data=st.data(),
)
def test_butterfly_property(c, h, w, over, data):
    shape = (c, h, w)
    n = {"all": c * h * w, "channels": c, "height": h, "width": w}[over]
    depth = data.draw(st.integers(0, max_depth(n)))
    check(shape, over, depth, seed=depth)


def test_parameters_exist_before_forward_and_state_dict_loads():
    a = Butterfly((4, 4, 4), 6, "all")
    randomise(a)
    b = Butterfly((4, 4, 4), 6, "all")
    assert a.weight.shape == (6, 4, 32)
    b.load_state_dict(a.state_dict())  # no forward has run on b
    x = torch.randn(2, 4, 4, 4)
    assert torch.equal(a(x)[0], b(x)[0])


def test_init_is_away_from_singularity_and_near_identity():
    m = Butterfly((4, 8, 8), 8, "all")
    det = m.dets()
    assert torch.allclose(det, torch.ones_like(det), atol=1e-6)
    assert float((m.matrices()[:, 0] - 1).abs().mean()) < 0.1  # rotations by small angles
    assert torch.equal(m.weight[:, 1:], torch.zeros_like(m.weight[:, 1:]))


def test_inverse_returns_exact_input_in_float32_and_grads_flow():
    m = Butterfly((3, 8, 8), 6, "all")
    randomise(m, 0.3)
    x = torch.randn(5, 3, 8, 8)
    y, ld = m(x)
    assert float((m.inverse(y) - x).abs().max() / x.abs().max()) < 1e-4
    (y.sum() + ld.sum()).backward()
    assert m.weight.grad is not None and torch.isfinite(m.weight.grad).all()


def test_singular_pair_is_reported_with_the_layer():
    m = Butterfly((4, 2, 2), 2, "all")
    with torch.no_grad():
        m.weight[1, :, 3] = torch.tensor([0.3, -400.0, 2.0, -400.0])  # AD − BC = e^-800 = 0 in float64
    m.provenance = Provenance("n3", 9)
    with pytest.raises(ValueError, match=r"n3 \(line 9\).*singular"):
        m.frozen()
    with pytest.raises(ValueError, match="singular"):
        m.check()
    m.weight.data[1, :, 3] = torch.tensor([0.3, -4.0, 2.0, -4.0])  # small but fine
    m.check()


# --------------------------------------------------------------------------- checker
class _Fail(Exception):
    def __init__(self, message, arg):
        super().__init__(message)
        self.arg = arg


def _ctx(warnings=None):
    def fail(message, arg):
        raise _Fail(message, arg)

    def warn(message, arg):
        if warnings is not None:
            warnings.append((message, arg))

    return CheckContext(fail, warn)


def test_checker():
    K = get_layer("butterfly")
    A = K.Args
    assert A().depth == "auto" and A().over == "all" and K.constant_logdet and not K.spatial
    assert K.infer_shape(A(), (3, 4, 4), _ctx()) == (3, 4, 4)
    assert K.resolved_depth(A(), (3, 4, 4)) == 4
    assert K.resolved_depth(A(over="channels"), (12, 4, 4)) == 2
    assert K.resolved_depth(A(over="width"), (3, 4, 8)) == 3
    assert K.resolved_depth(A(), (48,)) == 4
    assert K.infer_shape(A(depth=4), (3, 4, 4), _ctx()) == (3, 4, 4)
    assert K.infer_shape(A(over="channels"), (24,), _ctx()) == (24,)
    with pytest.raises(_Fail) as e:
        K.infer_shape(A(depth=5), (3, 4, 4), _ctx())
    assert e.value.arg == "depth" and "2^5 = 32" in str(e.value) and "largest valid depth is 4" in str(e.value)
    with pytest.raises(_Fail) as e:
        K.infer_shape(A(depth=2, over="channels"), (6, 4, 4), _ctx())
    assert e.value.arg == "depth" and "channel count 6" in str(e.value)
    for over in ("width", "height"):
        with pytest.raises(_Fail) as e:
            K.infer_shape(A(over=over), (16,), _ctx())
        assert e.value.arg == "over" and "vector" in str(e.value)
    with pytest.raises(_Fail) as e:
        K.infer_shape(A(depth=0), (4, 4, 4), _ctx())
    assert e.value.arg == "depth"
    warned: list = []
    assert K.infer_shape(A(over="channels"), (3, 4, 4), _ctx(warned)) == (3, 4, 4)
    assert warned and warned[0][1] == "over" and "identity" in warned[0][0]
    with pytest.raises(Exception):
        A(over="diagonal")


# --------------------------------------------------------------------------- ONNX
class _Both(torch.nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)

    def forward(self, x, y):
        outs = []
        for layer in self.layers:
            z, ld = layer(x)
            outs += [z, ld, layer.inverse(y)]
        return tuple(outs)


def test_onnx_forward_and_inverse(tmp_path):
    """Dense (over=width, n = 16) and level-wise (over=all, n = 256) frozen forms, one graph."""
    import onnxruntime as ort

    shape = (2, 8, 16)
    layers = []
    for over, depth in (("all", 3), ("width", 4)):
        m = Butterfly(shape, depth, over)
        randomise(m)
        layers.append(m.frozen().eval())
    both = _Both(layers).eval()
    gen = torch.Generator().manual_seed(0)
    ex = (torch.randn(4, *shape, generator=gen), torch.randn(4, *shape, generator=gen))
    b = torch.export.Dim("batch")
    prog = torch.onnx.export(both, ex, dynamo=True, opset_version=18, dynamic_shapes=({0: b}, {0: b}), verbose=False)
    prog.save(str(tmp_path / "bf.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "bf.onnx"), providers=["CPUExecutionProvider"])
    x, y = torch.randn(9, *shape, generator=gen), torch.randn(9, *shape, generator=gen)
    with torch.no_grad():
        ref = both(x, y)
    names = [i.name for i in sess.get_inputs()]
    out = sess.run(None, {names[0]: x.numpy(), names[1]: y.numpy()})
    assert len(out) == 6
    for o, r in zip(out, ref):
        assert o.shape == tuple(r.shape)
        assert float(np.abs(o - r.numpy()).max() / max(1.0, float(r.abs().max()))) <= 1e-4
