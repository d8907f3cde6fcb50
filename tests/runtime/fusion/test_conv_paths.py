"""How fused convolutions run: oneDNN only where this CPU's oneDNN has the dtype, only on the CPU.

``kernels.onednn_supports`` is the one capability probe; the tests force it both ways, so the
``F.conv2d`` fallback (oneDNN's 16-bit paths need avx512bw/vl/dq or avx_ne_convert for bfloat16,
avx512_fp16 or avx_ne_convert for float16) is exercised on any machine, and check that bfloat16 and
float16 fused models agree with float32 on either path.
"""

from __future__ import annotations

import copy

import pytest
import torch

import flowdsl
from flowdsl.runtime.fusion.ops import kernels
from flowdsl.runtime.training.demo import randomize_parameters

LOW = (torch.bfloat16, torch.float16)
#: 3×3 convolutions in coupling conditioners (ConvProgram) and in a periodic conv (conv_act without a cache)
BODY = (
    "actnorm conv1x1 coupling(hidden=8) butterfly(over=width) conv(kind=periodic, kernel=3) squeeze coupling(hidden=8)"
)
TEXT = f"flow t {{\n  input image(channels=4, height=4, width=4)\n  {BODY}\n}}\n"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1.0))


@pytest.fixture(scope="module")
def fused32():
    """(fused float32 model, x) with data-dependent init and mildly randomised parameters."""
    m = flowdsl.compile(flowdsl.parse(TEXT)).double()
    x = torch.rand(64, *m.input_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 0.5
    m.train()
    with torch.no_grad():
        m(x)
    randomize_parameters(m, scale=0.1, seed=1)
    return m.eval().float().fuse(), x[:3].float()


def force_support(monkeypatch, supported: bool) -> None:
    """Make ``onednn_supports`` answer ``supported`` for 16-bit dtypes (float32: True, others: False)."""
    monkeypatch.setattr(kernels, "onednn_supports", lambda dt: dt == torch.float32 or (supported and dt in LOW))


def spy_paths(monkeypatch) -> dict[str, int]:
    """Count oneDNN calls and ``F.conv2d`` calls made by the fused convolutions."""
    calls = {"onednn": 0, "conv2d": 0}
    onednn, conv2d = kernels.PackedWeights.get, kernels.F.conv2d

    def get(self, *args, **kw):
        calls["onednn"] += 1
        return onednn(self, *args, **kw)

    def conv(*args, **kw):
        calls["conv2d"] += 1
        return conv2d(*args, **kw)

    monkeypatch.setattr(kernels.PackedWeights, "get", get)
    monkeypatch.setattr(kernels.F, "conv2d", conv)
    return calls


def test_onednn_supports_float32_always_float64_never_16bit_as_onednn_says():
    assert kernels.onednn_supports(torch.float32) and not kernels.onednn_supports(torch.float64)
    assert not kernels.onednn_supports(torch.int64)
    assert kernels.onednn_supports(torch.bfloat16) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert kernels.onednn_supports(torch.float16) == torch.ops.mkldnn._is_mkldnn_fp16_supported()


def test_probe_falls_back_to_the_cpu_flags_and_then_to_no(monkeypatch):
    monkeypatch.setattr(torch.ops, "mkldnn", object())  # oneDNN's own check is missing
    flags = {"avx2": True, "avx512_bw": True, "avx512_vl": True, "avx512_dq": True}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    assert kernels._probe_16bit(torch.bfloat16) and not kernels._probe_16bit(torch.float16)
    flags = {"avx2": True}  # AVX2 only (e.g. AMD EPYC before Zen 4)
    assert not kernels._probe_16bit(torch.bfloat16) and not kernels._probe_16bit(torch.float16)
    flags = {"avx2": True, "avx_ne_convert": True}
    assert kernels._probe_16bit(torch.bfloat16) and kernels._probe_16bit(torch.float16)

    def broken():
        raise RuntimeError("no cpuinfo")

    monkeypatch.setattr(torch.cpu, "get_capabilities", broken)
    assert not kernels._probe_16bit(torch.bfloat16)


@pytest.mark.parametrize("supported", [True, False], ids=["onednn", "fallback"])
@pytest.mark.parametrize("dtype", LOW, ids=["bf16", "fp16"])
def test_16bit_path_follows_the_capability_and_agrees_with_float32(monkeypatch, fused32, dtype, supported):
    if supported and not kernels._HAS_POINTWISE:
        pytest.skip("this torch build has no oneDNN convolution op")
    f32, x = fused32
    with torch.no_grad():
        z, ld = f32(x)
        lp32 = f32.log_prob(x)
    really = kernels.onednn_supports(dtype)  # this CPU's answer, before forcing one
    force_support(monkeypatch, supported)
    assert kernels.conv_path(x.to(dtype)) == ("packed" if supported else "plain")
    assert kernels.conv_path(x.to(dtype)[:1]) == "plain"  # one image: F.conv2d either way
    calls = spy_paths(monkeypatch)
    fl = copy.deepcopy(f32).to(dtype)
    tol = 0.05 if dtype == torch.bfloat16 else 0.01
    with torch.no_grad():
        if supported and not really:  # forcing oneDNN here reproduces the crash the probe prevents
            with pytest.raises(RuntimeError, match="cpu support"):
                fl(x.to(dtype))
            return
        zl, ldl = fl(x.to(dtype))
        x_back = fl.inverse(z.to(dtype))
        lp = fl.log_prob(x.to(dtype))
    if supported:
        assert calls["onednn"] > 0 and calls["conv2d"] == 0
    else:
        assert calls["onednn"] == 0 and calls["conv2d"] > 0
    assert zl.dtype == dtype and ldl.dtype == torch.float32 and lp.dtype == torch.float32
    assert rel(zl, z) < tol and rel(ldl, ld) < tol and rel(x_back, x) < tol and rel(lp, lp32) < tol


def test_no_cpu_only_path_on_another_device(monkeypatch, fused32):
    """On a non-CPU tensor (the meta device here) every convolution is ``F.conv2d``, even with oneDNN
    claiming support, and neither oneDNN nor channels-last conversions are used."""
    f32, x = fused32
    force_support(monkeypatch, True)
    xm = x.to("meta")
    assert kernels.conv_path(xm) == "plain" and kernels.conv_path(xm[:1]) == "plain"
    calls = spy_paths(monkeypatch)
    fm = copy.deepcopy(f32).to("meta")
    with torch.no_grad():
        z, ld = fm(xm)
        assert fm.inverse(z).device.type == "meta"
    assert z.device.type == "meta" and ld.shape == (3,)
    assert calls["onednn"] == 0 and calls["conv2d"] > 0


def test_the_probe_is_not_traced_under_torch_compile(monkeypatch):
    monkeypatch.delitem(kernels._SUPPORTED, torch.bfloat16, raising=False)  # a cold probe while tracing
    x = torch.randn(4, 3, 6, 6, dtype=torch.bfloat16)
    w = torch.randn(5, 3, 3, 3, dtype=torch.bfloat16)
    fn = torch.compile(
        lambda a, b: kernels.conv_act(a, b, None, 1, "relu", None, None), backend="eager", fullgraph=True
    )
    with torch.no_grad():
        got = fn(x, w)
    ref = torch.relu(torch.nn.functional.conv2d(x.float(), w.float(), padding=1))
    assert got.dtype == torch.bfloat16 and rel(got, ref) < 0.05


def test_compiled_path_choice_checks_the_device_too(monkeypatch):
    """Under ``torch.compile`` (``is_compiling`` faked) a CPU tensor may take oneDNN, a tensor on
    another device (meta here) never does, whatever oneDNN claims to support."""
    force_support(monkeypatch, True)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: False)
    x = torch.rand(4, 3, 6, 6)
    with torch.no_grad():
        assert kernels.conv_path(x) == ("onednn" if kernels._HAS_POINTWISE else "plain")
        assert kernels.conv_path(x.to("meta")) == "plain" and kernels.conv_path(x[:1].to("meta")) == "plain"
        assert kernels.conv_path(x.to("meta").to(torch.bfloat16)) == "plain"
