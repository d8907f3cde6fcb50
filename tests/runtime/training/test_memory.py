"""flowdsl train --invertible-memory: backprop's gradients, checkpoints and resume, the CLI flag, refusals."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import pytest
import torch
from flowtest import compiled

from flowdsl.errors import NotAvailableError, NumericalError
from flowdsl.runtime.training import loop as training_loop
from flowdsl.runtime.training import read_checkpoint, train
from flowdsl.runtime.training.distributed import DistInfo
from flowdsl.runtime.training.loop import ModelFactory
from flowdsl.runtime.training.recompute import memory_saving_model

# two scales: squeeze, two Glow steps, split, squeeze, two steps with LU 1x1 convs and affine couplings
MULTISCALE = """
flow tiny_multiscale {
    input image(channels=1, height=8, width=8, levels=17)
    dequantize uniform
    squeeze(factor=2)
    repeat 2 { actnorm conv1x1 coupling(hidden=8, net=conv, depth=1) }
    split
    squeeze(factor=2)
    repeat 2 { actnorm conv1x1(param=lu) coupling(kind=affine, hidden=8, net=conv, depth=1) }
    prior gaussian(learned=true)
    train(data=digits, batch=16, lr=2e-3, steps=6, seed=0, warmup=1, eval_every=3, checkpoint_every=2)
}
"""

# a constant rate, so a run stopped early and resumed follows the uninterrupted one exactly
FAST = {"sample_n": 0, "val_max": 32, "eval_max": 64, "quiet": True, "schedule": "constant", "warmup": 0}


class CountingFactory(ModelFactory):
    """Builds the real model and counts calls of its steps' ``inverse`` (the recomputing backward
    inverts every step once per update; ordinary training never does when no samples are drawn)."""

    def __init__(self) -> None:
        self.inverses = 0
        self.invertible_steps = 0

    def build(self, spec, seed):
        model = super().build(spec, seed)
        for s in model.steps:
            if not s.factor_out:
                s.inverse = self._counted(s.inverse)
                self.invertible_steps += 1
        return model

    def _counted(self, fn):
        def inverse(y):
            self.inverses += 1
            return fn(y)

        return inverse


class PoisonAfter(ModelFactory):
    """Builds the real model; its last coupling emits NaN from the 4th call on, and its inverse
    raises on non-finite input (as a solver may), so a backward that ran on NaN would fail."""

    def build(self, spec, seed):
        model = super().build(spec, seed)
        calls = {"n": 0}

        def hook(module, inputs, output):
            calls["n"] += 1
            return (output[0] * float("nan"), output[1]) if calls["n"] > 4 else output

        last = model.steps[-1]
        last.register_forward_hook(hook)
        inverse = last.inverse

        def strict_inverse(y):
            if not bool(torch.isfinite(y).all()):
                raise RuntimeError("inverse of a non-finite tensor")
            return inverse(y)

        last.inverse = strict_inverse
        return model


def _spec_file(tmp_path: Path) -> Path:
    p = tmp_path / "ms.flow"
    p.write_text(MULTISCALE, encoding="utf-8")
    return p


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def _one_update(model, wrap: bool, x: torch.Tensor):
    """The loop's update (loss, backward, clipping, AdamW) on ``model``; returns its gradients."""
    net = memory_saving_model(model) if wrap else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = -net.log_prob(x).mean() / x[0].numel()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    opt.step()
    return grads


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_one_update_matches_backprop(dtype, tol):
    base, x = compiled(MULTISCALE, seed=3, batch=8)  # float64, actnorm initialised, parameters randomised
    base, x = base.to(dtype).train(), x.to(dtype)
    plain, recomputed = base, copy.deepcopy(base)
    g_plain = _one_update(plain, False, x)
    g_mem = _one_update(recomputed, True, x)
    assert g_plain.keys() == g_mem.keys() and any(k.startswith("prior.") for k in g_plain)
    for k in g_plain:
        ref = g_plain[k].norm()
        assert ref > 0, k
        assert float((g_mem[k] - g_plain[k]).norm() / ref) <= tol, k
    after_plain, after_mem = plain.state_dict(), recomputed.state_dict()
    for k in after_plain:  # and so the same parameters after the optimiser step
        assert torch.allclose(after_mem[k], after_plain[k], rtol=0, atol=100 * tol), k


def test_recomputing_backward_keeps_far_less_for_backward():
    model, x = compiled(MULTISCALE, seed=1, batch=16)
    model.train()

    def kept(net) -> int:
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = -net.log_prob(x).mean()
        loss.backward()
        return total

    plain, mem = kept(model), kept(memory_saving_model(model))
    assert mem * 4 < plain, (mem, plain)


def test_train_with_the_option_checkpoints_and_resumes(tmp_path):
    spec = _spec_file(tmp_path)
    counting = CountingFactory()
    full = train(spec, out=tmp_path / "full", invertible_memory=True, factory=counting, **FAST)
    assert counting.invertible_steps == 14 and counting.inverses == 6 * 14  # 6 updates, each step inverted once
    assert full["step"] == 6 and full["invertible_memory"] is True and math.isfinite(full["test_bpd"])
    rows = list(csv.DictReader((tmp_path / "full" / "metrics.csv").open()))
    assert rows and all(math.isfinite(float(r["train_loss"])) for r in rows)
    ck = read_checkpoint(tmp_path / "full" / "last.pt")
    assert ck["step"] == 6 and ck["config"]["invertible_memory"] is True
    assert json.loads((tmp_path / "full" / "config.json").read_text())["invertible_memory"] is True

    # stop at step 4, resume without repeating the option: it is remembered and the run ends
    # exactly where the uninterrupted one did
    train(spec, out=tmp_path / "part", steps=4, invertible_memory=True, **FAST)
    resumed_counter = CountingFactory()
    s = train(spec, out=tmp_path / "part", steps=6, resume=True, factory=resumed_counter, **FAST)
    assert s["step"] == 6 and s["invertible_memory"] is True and resumed_counter.inverses == 2 * 14
    for k, v in _weights(tmp_path / "full" / "last.pt").items():
        assert torch.equal(v, _weights(tmp_path / "part" / "last.pt")[k]), k

    # ordinary backprop follows the same trajectory up to float32 rounding
    plain_counter = CountingFactory()
    plain = train(spec, out=tmp_path / "plain", factory=plain_counter, **FAST)
    assert plain_counter.inverses == 0 and plain["invertible_memory"] is False
    for k, v in _weights(tmp_path / "plain" / "last.pt").items():
        assert torch.allclose(v, _weights(tmp_path / "full" / "last.pt")[k], rtol=0, atol=2e-5), k


def test_cli_flag_is_accepted_and_can_be_turned_off_on_resume(tmp_path, capsys):
    from flowdsl.cli import main

    spec = _spec_file(tmp_path)
    run = tmp_path / "run"
    common = ["train", str(spec), "--out", str(run), "--sample-n", "0", "--eval-every", "100", "--quiet"]
    assert main([*common, "--invertible-memory", "--steps", "3"]) == 0
    assert read_checkpoint(run / "last.pt")["config"]["invertible_memory"] is True
    assert main([*common, "--no-invertible-memory", "--steps", "4", "--resume"]) == 0
    ck = read_checkpoint(run / "last.pt")
    assert ck["step"] == 4 and ck["config"]["invertible_memory"] is False
    assert "Traceback" not in capsys.readouterr().err


def test_nonfinite_loss_stops_with_the_numerical_error(tmp_path):
    with pytest.raises(NumericalError, match=r"training stopped at step \d+: the loss is nan.*coupling"):
        train(_spec_file(tmp_path), out=tmp_path / "r", factory=PoisonAfter(), invertible_memory=True, **FAST)


def test_several_processes_and_other_models_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training_loop, "init_from_env", lambda device=None: DistInfo(rank=0, world=2))
    monkeypatch.setattr(training_loop, "barrier", lambda info: None)
    with pytest.raises(NotAvailableError, match="one process only"):
        train(_spec_file(tmp_path), out=tmp_path / "r", invertible_memory=True, **FAST)
    assert not (tmp_path / "r" / "last.pt").exists()
    with pytest.raises(NotAvailableError, match="unfused compiled flow"):
        memory_saving_model(torch.nn.Linear(2, 2))
    with pytest.raises(NotAvailableError, match="unfused compiled flow"):
        memory_saving_model(compiled(MULTISCALE)[0].fuse())
