"""FDRL training end to end on tiny settings: a toy run that moves particles closer, exact
resume, the prior and data-set sources, the CLI dispatch of train/sample, ONNX export of the
estimator with onnxruntime parity, and the classifier command."""

from __future__ import annotations

import json

import pytest
import torch

import flowdsl
from flowdsl.cli import main
from flowdsl.errors import CheckpointError
from flowdsl.runtime.objectives.fdrl.model import FDRLModel, FDRLSettings
from flowdsl.runtime.objectives.fdrl.runs import load_fdrl, sample_fdrl
from flowdsl.runtime.objectives.fdrl.train import train_fdrl

TINY = dict(warmup=0, schedule="constant", eval_every=1000, checkpoint_every=1000, sample_n=0, threads=1)

TOY = """flow toy {
    input vector(dim=2)
    objective fdrl(estimator=mlp(hidden=32, depth=2), steps=10, step_size=0.05, noise=0.002, source=uniform)
    train(data=pinwheel, batch=128, lr=1e-2, steps=150, seed=0)
}
"""

DIGITS = """flow dig {
    input image(channels=1, height=8, width=8, levels=17)
    objective fdrl(estimator=convnet(hidden=8, depth=2), steps=3, step_size=0.5, noise=0.01)
    train(data=digits, batch=16, lr=1e-3, steps=4, seed=0)
}
"""


def test_short_toy_run_moves_particles_closer(tmp_path):
    s = train_fdrl(flowdsl.parse(TOY), out=tmp_path / "r", quiet=True, fdrl={"eval_n": 600, "ema": 0.9}, **TINY)
    assert s["step"] == 150 and s["source"] == "uniform"
    # energy distance to the held-out test points: uniform source ≈ 0.26, FDRL particles ≈ 0.02
    assert s["test_improvement"] > 4.0, s
    for name in (
        "last.pt",
        "best.pt",
        "weights.safetensors",
        "metrics.csv",
        "curves.png",
        "summary.json",
        "spec.flow",
        "config.json",
    ):
        assert (tmp_path / "r" / name).is_file(), name
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["fdrl"]["ema"] == 0.9 and cfg["batch"] == 128


def _weights(run):
    spec, model, ck = load_fdrl(run, prefer="last")
    return ck["step"], {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_continues_exactly(tmp_path):
    spec = flowdsl.parse(TOY)
    kw = dict(quiet=True, fdrl={"eval_n": 50}, **TINY)
    train_fdrl(spec, steps=6, out=tmp_path / "a", **kw)
    train_fdrl(spec, steps=3, out=tmp_path / "b", **kw)
    with pytest.raises(CheckpointError, match="--resume"):
        train_fdrl(spec, steps=6, out=tmp_path / "b", **kw)
    train_fdrl(spec, steps=6, out=tmp_path / "b", resume=True, **kw)
    sa, wa = _weights(tmp_path / "a")
    sb, wb = _weights(tmp_path / "b")
    assert sa == sb == 6 and wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    rows = (tmp_path / "b" / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,lr,train_loss") and [r.split(",")[0] for r in rows[1:]] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
    ]


def test_ema_weights_trail_the_raw_weights(tmp_path):
    spec = flowdsl.parse(TOY)
    train_fdrl(spec, steps=5, out=tmp_path / "r", quiet=True, fdrl={"eval_n": 50, "ema": 0.5}, **TINY)
    _, model, _ = load_fdrl(tmp_path / "r", prefer="last")
    raw = torch.cat([p.flatten() for p in model.estimator.parameters()])
    ema = torch.cat([p.flatten() for p in model.ema.parameters()])
    init = torch.cat([p.flatten() for p in FDRLModel(spec, FDRLSettings(), 0).estimator.parameters()])
    assert not torch.equal(raw, ema)
    assert (ema - raw).norm() < (init - raw).norm()


def _mle_checkpoint(tmp_path, layers: str):
    from flowdsl.runtime.training.checkpoint import save_checkpoint

    text = (
        f"flow base {{\n    input image(channels=1, height=8, width=8, levels=17)\n{layers}    train(data=digits)\n}}\n"
    )
    spec = flowdsl.parse(text)
    model = flowdsl.compile(spec, seed=0)
    path = tmp_path / f"flow{abs(hash(layers)) % 1000}.pt"
    save_checkpoint(
        path, spec_text=spec.source, spec_sha256=spec.sha256, step=0, model_state=model.state_dict(), config={"seed": 0}
    )
    return path, model


def test_prior_source_refines_the_spec_flow_from_a_checkpoint(tmp_path):
    layers = "    squeeze(factor=2)\n    actnorm\n    coupling(hidden=8, depth=1)\n"
    ck, flow = _mle_checkpoint(tmp_path, layers)
    text = DIGITS.replace("noise=0.01)", "noise=0.01, source=prior)").replace("    objective", layers + "    objective")
    spec = flowdsl.parse(text)
    with pytest.raises(CheckpointError, match="--source-checkpoint"):
        train_fdrl(spec, steps=1, out=tmp_path / "none", quiet=True, **TINY)
    s = train_fdrl(
        spec, steps=2, out=tmp_path / "r", quiet=True, fdrl={"source_checkpoint": str(ck), "eval_n": 20}, **TINY
    )
    assert s["source"] == "prior"
    _, model, _ = load_fdrl(tmp_path / "r")
    for k, v in flow.state_dict().items():  # the flow's weights travel with the run
        assert torch.equal(model.state_dict()["source.flow." + k], v), k
    x = sample_fdrl(model, 5, seed=0, steps=2)
    assert x.shape == (5, 1, 8, 8) and x.abs().max() <= 1
    other, _ = _mle_checkpoint(tmp_path, "    squeeze(factor=2)\n    actnorm\n")
    with pytest.raises(CheckpointError, match="not this spec's flow"):
        train_fdrl(spec, steps=1, out=tmp_path / "bad", quiet=True, fdrl={"source_checkpoint": str(other)}, **TINY)


def test_translation_source_is_a_second_data_set(tmp_path):
    s = train_fdrl(
        flowdsl.parse(DIGITS),
        steps=2,
        out=tmp_path / "t",
        quiet=True,
        fdrl={"source_data": "digits", "source_classes": [1], "data_classes": [7], "eval_n": 20},
        **TINY,
    )
    assert s["source"] == "data"
    _, model, _ = load_fdrl(tmp_path / "t")
    from flowdsl.runtime.data.digits import digits_arrays

    imgs, labels = digits_arrays("test")
    ones = torch.as_tensor(imgs[labels == 1], dtype=torch.float32)
    assert model.source.x_raw.shape[0] == len(ones) and torch.equal(model.source.x_raw, ones)


def test_cli_train_sample_export_dispatch_on_the_objective(tmp_path, capsys):
    spec_path = tmp_path / "dig.flow"
    spec_path.write_text(DIGITS)
    run = tmp_path / "run"
    assert (
        main(
            ["train", str(spec_path), "--out", str(run), "--quiet", "--eval-n", "16", "--sample-n", "4", "--ema", "0.9"]
        )
        == 0
    )
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["fdrl"]["ema"] == 0.9 and cfg["schedule"] == "constant"  # FDRL's default rate schedule
    assert (run / "samples.png").is_file()
    png = tmp_path / "s.png"
    assert main(["sample", str(run), "--n", "6", "--flow-steps", "2", "-o", str(png)]) == 0
    assert png.is_file() and "FDRL samples" in capsys.readouterr().out
    out = tmp_path / "onnx"
    assert main(["fdrl-export", str(run), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "max rel err" in text and (out / "estimator.onnx").is_file()
    # an MLE spec still goes to the training package
    assert main(["train", str(tmp_path / "missing.flow"), "--out", str(tmp_path / "m")]) == 1


@pytest.mark.parametrize(
    "objective",
    [
        "fdrl(estimator=resnet(hidden=8, blocks=2))",
        "fdrl(estimator=convnet(hidden=8, depth=3), loss=lsif, divergence=pearson)",
        "fdrl(estimator=mlp(hidden=16, depth=2), source=uniform)",
    ],
)
def test_estimator_exports_to_onnx_with_parity(tmp_path, objective):
    import onnx

    from flowdsl.runtime.objectives.fdrl.export import check_estimator_parity, export_estimator

    spec = flowdsl.parse(
        f"flow e {{\n    input image(channels=1, height=8, width=8, levels=17)\n    objective {objective}\n}}\n"
    )
    model = FDRLModel(spec, FDRLSettings(), seed=1)
    with torch.no_grad():  # make the EMA differ from init so the export is not trivially zero
        for p in model.ema.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    path = export_estimator(model, tmp_path)
    res = check_estimator_parity(model, path, batch=9)
    assert res["rel"] <= 1e-4 and res["batch"] == 9
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["flowdsl.fdrl.output"] == model.estimator.head and "PyTorch only" in meta["flowdsl.fdrl.sampler"]
    assert meta["flowdsl.spec_sha256"] == spec.sha256


def test_classifier_command_and_loading(tmp_path, capsys):
    from flowdsl.runtime.objectives.fdrl.classifier import load_classifier

    out = tmp_path / "clf.safetensors"
    assert main(["fdrl-classifier", "--out", str(out), "--steps", "40", "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    clf, rep = load_classifier(out)
    assert rep["test_accuracy"] > 0.5 and clf(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert clf.features(torch.zeros(3, 1, 8, 8)).shape == (3, 64)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(CheckpointError):
        load_classifier(bad)


def test_overwrite_starts_clean_and_invertible_memory_is_refused(tmp_path):
    from flowdsl.errors import DataError

    spec = flowdsl.parse(TOY)
    kw = dict(quiet=True, fdrl={"eval_n": 50}, **TINY)
    run = tmp_path / "r"
    train_fdrl(spec, steps=2, out=run, **kw)
    stale = run / "best.pt"
    stale.write_bytes(b"an earlier run's best checkpoint")
    # a fresh start whose validation never runs (eval_every > steps) must not pick up the stale best.pt
    s = train_fdrl(spec, steps=2, out=run, overwrite=True, **kw)
    assert s["step"] == 2 and (not stale.exists() or stale.read_bytes() != b"an earlier run's best checkpoint")
    with pytest.raises(DataError, match="invertible-memory"):
        train_fdrl(spec, steps=1, out=tmp_path / "m", invertible_memory=True, **kw)


def test_the_training_api_dispatches_on_the_objective(tmp_path):
    from flowdsl.runtime.training import train

    s = train(TOY, steps=2, out=tmp_path / "r", quiet=True, ema=0.5, eval_n=20, **TINY)  # FDRL settings as keywords
    assert s["objective"] == "fdrl" and s["step"] == 2
    assert json.loads((tmp_path / "r" / "config.json").read_text())["fdrl"]["ema"] == 0.5
