"""A checkpoint belongs to an architecture, not to a text (issue #14 item 2)."""

from __future__ import annotations

import hashlib

import pytest
import torch

import flowdsl
from flowdsl.compiler.canonical import architecture_sha256
from flowdsl.errors import CheckpointError
from flowdsl.runtime.training import read_checkpoint, train
from flowdsl.runtime.training.checkpoint import check_spec, save_checkpoint
from flowdsl.runtime.training.checkpoint_io import load_weights

SPEC = """
block step(width=16) {
    actnorm
    coupling(kind=affine, net=mlp, hidden=$width, depth=1)
    permute
}

flow id_moons {
    input vector(dim=2)
    repeat 2 { step(width=16) }
    prior gaussian
    train(data=moons, batch=32, lr=3e-3, steps=4, seed=1, warmup=1, eval_every=2, checkpoint_every=2)
}
"""
# comments, layout, the block's name and train(batch=...) changed: the same architecture
EDITED = "# trained on moons\n" + SPEC.replace("block step(width=16) {", "block pair(width=16) {   # renamed").replace(
    "step(width=16) }", "pair(width=16) }"
).replace("batch=32", "batch=8")
OTHER = SPEC.replace("hidden=$width", "hidden=12")
FAST = {"sample_n": 0, "val_max": 64, "quiet": True}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("id")
    train(SPEC, out=d / "r", **FAST)
    return d / "r"


def test_checkpoints_carry_the_architecture_fingerprint(run):
    arch = architecture_sha256(flowdsl.parse(SPEC))
    assert read_checkpoint(run / "last.pt")["arch_sha256"] == arch
    assert read_checkpoint(run / "weights.safetensors")["arch_sha256"] == arch


def test_an_edited_text_of_the_same_architecture_loads(run):
    edited = flowdsl.parse(EDITED)
    assert edited.sha256 != flowdsl.parse(SPEC).sha256
    for name in ("last.pt", "best.pt", "weights.safetensors"):
        model = flowdsl.compile(edited, seed=5)
        load_weights(model, run / name)
        want = read_checkpoint(run / name)["model"]
        assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="another spec"):
        load_weights(flowdsl.compile(flowdsl.parse(OTHER)), run / "last.pt")


def test_resume_with_an_edited_text_continues(run, tmp_path):
    import shutil

    shutil.copytree(run, tmp_path / "r")
    s = train(EDITED, out=tmp_path / "r", steps=6, resume=True, **FAST)
    assert s["step"] == 6
    with pytest.raises(CheckpointError, match="another spec"):
        train(OTHER, out=tmp_path / "r", steps=8, resume=True, **FAST)


def _old_style(path, text: str, state: dict) -> None:
    """A checkpoint as flowdsl wrote them before the fingerprint: only the text hash."""
    save_checkpoint(
        path, spec_text=text, spec_sha256=hashlib.sha256(text.encode()).hexdigest(), step=3, model_state=state
    )
    assert "arch_sha256" not in read_checkpoint(path)


def test_old_checkpoints_without_the_fingerprint_are_read_by_their_stored_text(run, tmp_path):
    state = read_checkpoint(run / "last.pt")["model"]
    _old_style(tmp_path / "old.pt", SPEC, state)
    old = read_checkpoint(tmp_path / "old.pt")  # its digest (written without the field) verifies
    check_spec(old, flowdsl.parse(EDITED))  # same architecture, other text: accepted
    with pytest.raises(CheckpointError, match="another spec.*architecture"):
        check_spec(old, flowdsl.parse(OTHER))
    # a stored text that no longer parses: the text hashes decide, with a clear error
    broken = SPEC.replace("actnorm", "no_such_kind")
    _old_style(tmp_path / "broken.pt", broken, state)
    with pytest.raises(CheckpointError, match="another spec.*spec text"):
        check_spec(read_checkpoint(tmp_path / "broken.pt"), flowdsl.parse(EDITED))
