"""``--precision bf16-mixed``: conditioner nets in bfloat16, weights, log-dets and the prior in float32.

bfloat16 autocast works on the CPU, so everything here runs for real; the reference for the
densities is the same model in float64.
"""

from __future__ import annotations

import copy
import csv
import math

import pytest
import torch
from torch import nn

import flowdsl
from flowdsl.errors import DataError, FlowDSLError
from flowdsl.runtime.training import read_checkpoint, train
from flowdsl.runtime.training.demo import randomize_parameters
from flowdsl.runtime.training.models import ModelFactory
from flowdsl.runtime.training.precision import autocast_conditioners, conditioner_nets

TINY = """
flow tiny_bf16 {
    input image(channels=1, height=8, width=8, levels=17)
    dequantize uniform
    squeeze(factor=2)
    repeat 2 { actnorm conv1x1 coupling(hidden=8, net=conv, depth=1) }
    prior gaussian(learned=true)
    train(data=digits, batch=32, lr=3e-3, steps=16, seed=0, warmup=2, eval_every=8, checkpoint_every=8)
}
"""
FAST = {"sample_n": 0, "val_max": 64, "eval_max": 64, "quiet": True, "device": "cpu"}


def _conv_dtypes(model: nn.Module, log: list) -> None:
    """Record (grad enabled, output dtype) of every convolution inside the conditioner nets."""
    for net in conditioner_nets(model):
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.register_forward_hook(lambda mod, a, out: log.append((torch.is_grad_enabled(), out.dtype)))


@pytest.fixture(scope="module")
def model_and_x():
    m = flowdsl.compile(flowdsl.parse(TINY), seed=0)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    m.train()
    with torch.no_grad():
        m(x)  # ActNorm's data-dependent initialisation
    randomize_parameters(m, scale=0.3, seed=1)  # couplings away from the identity
    return m, x


def test_conditioners_run_in_bf16_and_densities_stay_float32(model_and_x):
    m, x = model_and_x
    with torch.no_grad():
        lp64 = copy.deepcopy(m).double().log_prob(x.double())
    log: list = []
    work = copy.deepcopy(m)
    _conv_dtypes(work, log)
    assert len(conditioner_nets(work)) == 2
    with torch.no_grad(), autocast_conditioners(work, "cpu"):
        h = x
        for step in work.steps:
            h, ld = step(h)
            assert h.dtype == torch.float32 and ld.dtype == torch.float32, type(step).__name__
        lp = work.log_prob(x)
    assert log and {d for _, d in log} == {torch.bfloat16}
    assert lp.dtype == torch.float32
    # bf16 conditioner outputs move log p by a few hundredths of a nat (|log p| ≈ 50 here); whole-model
    # autocast on the CPU, which leaves log-dets and z in bfloat16, is off by ~0.4 nats
    assert float((lp.double() - lp64).abs().max()) < 0.1
    log.clear()
    with torch.no_grad(), autocast_conditioners(work, "cpu", "32"):
        work.log_prob(x)
    assert {d for _, d in log} == {torch.float32}


def test_forward_is_restored_after_the_block_also_after_an_error(model_and_x):
    m, x = model_and_x
    work = copy.deepcopy(m)
    with pytest.raises(RuntimeError, match="boom"), autocast_conditioners(work, "cpu"):
        assert all("forward" in net.__dict__ for net in conditioner_nets(work))
        raise RuntimeError("boom")
    assert not any("forward" in net.__dict__ for net in conditioner_nets(work))
    assert set(work.state_dict()) == set(m.state_dict())
    log: list = []
    _conv_dtypes(work, log)
    with torch.no_grad():
        work.log_prob(x)
    assert {d for _, d in log} == {torch.float32}


class _Recording(ModelFactory):
    def __init__(self) -> None:
        self.log: list = []

    def build(self, spec, seed):
        model = super().build(spec, seed)
        _conv_dtypes(model, self.log)
        return model


def test_bf16_mixed_training_learns_with_float32_weights(tmp_path):
    (tmp_path / "t.flow").write_text(TINY, encoding="utf-8")
    factory = _Recording()
    res = train(tmp_path / "t.flow", out=tmp_path / "r", precision="bf16-mixed", factory=factory, **FAST)
    # training steps (gradients on) ran the nets in bfloat16; evaluations (no gradients) in float32
    assert {d for g, d in factory.log if g} == {torch.bfloat16}
    assert {d for g, d in factory.log if not g} == {torch.float32}
    rows = list(csv.DictReader((tmp_path / "r" / "metrics.csv").open()))
    losses = [float(r["train_loss"]) for r in rows if r.get("train_loss")]
    assert len(losses) >= 4 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-2:]) / 2 < losses[0]  # decreasing-ish over 16 steps
    # the same run in float32 (same seed, batches and noise) is the reference
    ref = train(tmp_path / "t.flow", out=tmp_path / "r32", precision="32", **FAST)
    ref_rows = list(csv.DictReader((tmp_path / "r32" / "metrics.csv").open()))
    ref_losses = [float(r["train_loss"]) for r in ref_rows if r.get("train_loss")]
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) < 0.02
    assert math.isfinite(res["test_bpd"]) and abs(res["test_bpd"] - ref["test_bpd"]) < 0.02
    ck = read_checkpoint(tmp_path / "r" / "last.pt")
    assert {v.dtype for v in ck["model"].values() if v.is_floating_point()} == {torch.float32}
    assert ck["config"]["precision"] == "bf16-mixed"  # a resumed run keeps it


def test_bf16_mixed_is_refused_with_invertible_memory(tmp_path):
    (tmp_path / "t.flow").write_text(TINY, encoding="utf-8")
    with pytest.raises(FlowDSLError, match="does not combine"):
        train(tmp_path / "t.flow", out=tmp_path / "r", precision="bf16-mixed", invertible_memory=True, **FAST)
    with pytest.raises(DataError, match="precision must be 32 or bf16-mixed"):
        train(tmp_path / "t.flow", out=tmp_path / "r", precision="fp8", **FAST)


def test_fdrl_refuses_cuda_and_bf16_instead_of_ignoring_them(monkeypatch):
    import flowdsl.runtime.training.device as device
    from flowdsl.runtime.objectives.fdrl.train import _cpu_only

    _cpu_only("auto", None, "x")  # auto: the CPU for FDRL
    _cpu_only("cpu", "32", "x")
    with pytest.raises(DataError, match="float32"):
        _cpu_only("cpu", "bf16-mixed", "x")
    monkeypatch.setattr(device, "resolve_device", lambda text: torch.device("cuda", 0))  # a machine with a GPU
    with pytest.raises(DataError, match="CPU only"):
        _cpu_only("cuda", None, "x")


def test_bf16_conditioners_compile_in_one_graph(model_and_x):
    """The bf16-mixed forward has no graph break (``fullgraph=True``), the design check for CUDA,
    and computes what the eager bf16-mixed forward computes."""
    m, x = model_and_x
    work = copy.deepcopy(m)
    torch._dynamo.reset()
    with autocast_conditioners(work, "cpu"):
        ref = work.log_prob(x)
        got = torch.compile(work.log_prob, fullgraph=True, backend="eager")(x)
        (grad,) = torch.autograd.grad(got.sum(), [next(work.parameters())])
    assert got.dtype == torch.float32 and torch.equal(got, ref) and torch.isfinite(grad).all()
