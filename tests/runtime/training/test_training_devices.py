"""Devices in training and sampling: what moves where, checkpoints onto any device, --device wiring.

There is no GPU here, so "another device" is torch's ``meta`` device (tensors with shapes and no
data): the loop is pointed at it by replacing ``resolve_device`` and stopped at the model's first
call. That proves where the loop puts the model, its prior, the batches and the optimizer state;
it cannot prove that CUDA kernels work (CUDA itself is untested here). The numerics of the
training paths run on the CPU.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import pytest
import torch

import flowdsl.runtime.training.loop as training_loop
from flowdsl.cli import main as flowdsl_main
from flowdsl.errors import FlowDSLError
from flowdsl.runtime.training import load_model, read_checkpoint, train
from flowdsl.runtime.training.models import ModelFactory

TINY = """
flow tiny_dev {
    input image(channels=1, height=8, width=8, levels=17)
    dequantize uniform
    squeeze(factor=2)
    repeat 2 { actnorm conv1x1 coupling(hidden=8, net=conv, depth=1) }
    prior gaussian(learned=true)
    train(data=digits, batch=16, lr=2e-3, steps=6, seed=0, warmup=2, eval_every=3, checkpoint_every=3)
}
"""
FAST = {"sample_n": 0, "val_max": 64, "quiet": True, "eval_max": 64}
META = torch.device("meta")


class _Stop(Exception):
    pass


class _StopAtFirstCall(ModelFactory):
    """Builds the spec's model and stops the run at the model's first call, recording the devices
    of the call's input, the model's tensors and the prior's tensors."""

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}

    def build(self, spec, seed):
        model = super().build(spec, seed)

        def hook(module, args):
            self.seen["x"] = args[0].device
            self.seen["grad"] = torch.is_grad_enabled()
            self.seen["model"] = {t.device for t in list(module.parameters()) + list(module.buffers())}
            self.seen["prior"] = {t.device for t in module.prior.parameters()}
            raise _Stop

        model.register_forward_pre_hook(hook)
        return model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("devrun")
    (d / "tiny.flow").write_text(TINY, encoding="utf-8")
    train(d / "tiny.flow", out=d / "r", device="cpu", **FAST)
    return d


def test_loop_moves_model_prior_and_first_batch_to_the_device(tmp_path, monkeypatch):
    (tmp_path / "tiny.flow").write_text(TINY, encoding="utf-8")
    monkeypatch.setattr(training_loop, "resolve_device", lambda text: META)
    factory = _StopAtFirstCall()
    with pytest.raises(_Stop):
        train(tmp_path / "tiny.flow", out=tmp_path / "r", factory=factory, **FAST)
    # the first call is the data-dependent initialisation (ActNorm) on a batch of training data
    assert factory.seen["x"] == META and not factory.seen["grad"]
    assert factory.seen["model"] == {META} and factory.seen["prior"] == {META}


def test_resume_puts_optimizer_state_and_batches_on_the_device(run_dir, monkeypatch):
    """A checkpoint written on the CPU resumes on another device: AdamW's moments follow the
    parameters there (``step`` stays a CPU scalar, as torch keeps it), and the first training
    batch (gradients on) is on the device. Values are not checked: meta tensors have none."""
    monkeypatch.setattr(training_loop, "resolve_device", lambda text: META)
    seen = {}
    real_restore = training_loop.restore

    def restore(model, ckpt, opt=None):
        real_restore(model, ckpt, opt)
        seen["state"] = {k: v.device for st in opt.state.values() for k, v in st.items() if torch.is_tensor(v)}
        seen["moments"] = {v.device for st in opt.state.values() for k, v in st.items() if k.startswith("exp_avg")}

    monkeypatch.setattr(training_loop, "restore", restore)
    factory = _StopAtFirstCall()
    with warnings.catch_warnings(), pytest.raises(_Stop):
        warnings.simplefilter("ignore")  # copying CPU values into meta tensors is a no-op, and torch says so
        train(run_dir / "tiny.flow", out=run_dir / "r", resume=True, steps=9, factory=factory, **FAST)
    assert seen["moments"] == {META} and seen["state"]
    assert factory.seen["x"] == META and factory.seen["grad"]
    assert factory.seen["model"] == {META} and factory.seen["prior"] == {META}


def test_load_model_moves_to_the_requested_device(run_dir):
    _, model, _ = load_model(run_dir / "r", device=META)
    assert {t.device for t in list(model.parameters()) + list(model.buffers())} == {META}
    _, model, _ = load_model(run_dir / "r", device="cpu")
    assert {t.device.type for t in model.parameters()} == {"cpu"}


def _as_if_written_on_cuda(src: Path, dst: Path) -> int:
    """Copy a torch archive, relabelling every tensor storage as living on ``cuda:0`` (the pickle
    names a storage's device once and refers back to it)."""
    n = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                n = data.count(b"X\x03\x00\x00\x00cpu")
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            zout.writestr(info, data)
    return n


@pytest.mark.skipif(torch.cuda.is_available(), reason="proves loading without CUDA")
def test_checkpoint_written_on_cuda_loads_on_a_machine_without_cuda(run_dir, tmp_path):
    src = run_dir / "r" / "last.pt"
    dst = tmp_path / "cuda.pt"
    assert _as_if_written_on_cuda(src, dst) >= 1
    with pytest.raises(RuntimeError, match="CUDA"):  # the relabelled archive really claims CUDA
        torch.load(dst, weights_only=True)
    ck = read_checkpoint(dst)  # map_location="cpu"
    ref = read_checkpoint(src)
    assert all(torch.equal(ck["model"][k], ref["model"][k]) for k in ref["model"])
    _, model, _ = load_model(dst, device="cpu")
    assert all(torch.equal(v, ref["model"][k]) for k, v in model.state_dict().items())


def test_cli_passes_device_and_precision_to_the_training_loop(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny.flow").write_text(TINY, encoding="utf-8")
    seen = {}
    real = training_loop.resolve_config

    def config(*a, **k):  # record what the run resolved, then stop (a user error: exit 1)
        seen["precision"] = real(*a, **k).precision
        raise FlowDSLError("stopped by the test")

    def device(text):
        seen["device"] = text
        return torch.device("cpu")

    monkeypatch.setattr(training_loop, "resolve_config", config)
    monkeypatch.setattr(training_loop, "resolve_device", device)
    argv = ["train", str(tmp_path / "tiny.flow"), "--device", "CPU", "--precision", "bf16-mixed", "-q"]
    assert flowdsl_main(argv + ["--out", str(tmp_path / "r")]) == 1
    assert "stopped by the test" in capsys.readouterr().err
    assert seen == {"device": "cpu", "precision": "bf16-mixed"}
    assert flowdsl_main(argv[:2] + ["-q", "--out", str(tmp_path / "r2")]) == 1
    assert seen == {"device": "auto", "precision": "32"}  # the defaults


@pytest.mark.parametrize(
    "flags, message",
    [(["--device", "gpu"], "expected auto, cpu, cuda"), (["--precision", "16"], "invalid choice")],
)
def test_bad_device_or_precision_is_a_usage_error(tmp_path, capsys, flags, message):
    (tmp_path / "tiny.flow").write_text(TINY, encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        flowdsl_main(["train", str(tmp_path / "tiny.flow"), *flags])
    assert e.value.code == 1 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_a_user_error(run_dir, tmp_path, capsys):
    assert flowdsl_main(["sample", str(run_dir / "r"), "--device", "cuda", "-o", str(tmp_path / "g.png")]) == 1
    assert "CUDA is not available" in capsys.readouterr().err and not (tmp_path / "g.png").exists()


def test_sample_cli_takes_the_device(run_dir, tmp_path, monkeypatch):
    import flowdsl.runtime.training.models as models

    seen = {}
    real = models.load_model

    def spy(*a, **k):
        seen["device"] = k.get("device")
        return real(*a, **k)

    monkeypatch.setattr(models, "load_model", spy)
    assert (
        flowdsl_main(["sample", str(run_dir / "r"), "--device", "cpu", "-n", "4", "-o", str(tmp_path / "g.png")]) == 0
    )
    assert seen["device"] == torch.device("cpu") and (tmp_path / "g.png").is_file()
