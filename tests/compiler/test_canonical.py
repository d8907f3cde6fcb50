"""The architecture fingerprint (compiler/canonical.py): what changes it and what does not."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import flowdsl
from flowdsl.compiler.canonical import architecture_sha256, canonical_form, canonical_text

ROOT = Path(__file__).resolve().parents[2]

BASE = """
block step(width=16) {
    actnorm
    coupling(kind=affine, net=mlp, hidden=$width, depth=1)
    permute(kind=reverse)
}

flow moons_flow {
    input vector(dim=2)
    repeat 2 { step(width=16) }
    prior gaussian
    train(data=moons, batch=32, lr=3e-3, steps=12, seed=1)
}
"""

# the same architecture written differently: comments, layout, block and flow names,
# explicit defaults, other train() settings
SAME = """
# a comment
block layer_pair(w=16) {   # another block name
    actnorm
    coupling(kind=affine,net=mlp,hidden=$w,depth=1)   # no spaces
    permute(kind=reverse)
}
flow renamed_flow {
  input vector(dim=2)
  layer_pair(w=16)
  layer_pair(w=16)
  prior gaussian(learned=false)
  train(data=moons, batch=64, lr=1e-2, steps=99, seed=7, warmup=3)
}
"""


def _arch(text: str) -> str:
    return architecture_sha256(flowdsl.parse(text))


def test_layout_comments_block_names_and_train_settings_do_not_change_it():
    a, b = flowdsl.parse(BASE), flowdsl.parse(SAME)
    assert a.sha256 != b.sha256  # different texts ...
    assert architecture_sha256(a) == architecture_sha256(b)  # ... one architecture
    assert canonical_text(a) == canonical_text(b)
    assert architecture_sha256(a) == architecture_sha256(a.graph)  # spec or its graph
    # an argument left at its default is the same as the default written out
    assert _arch(BASE.replace("permute(kind=reverse)", "permute")) == architecture_sha256(a)


@pytest.mark.parametrize(
    "old, new",
    [
        ("hidden=$width", "hidden=17"),  # an argument
        ("depth=1", "depth=2"),
        ("permute(kind=reverse)", "permute(kind=shuffle)"),
        ("repeat 2", "repeat 3"),  # the number of layers
        ("prior gaussian", "prior gaussian(learned=true)"),  # the prior's arguments
        ("prior gaussian", "prior laplace"),  # the prior
        ("input vector(dim=2)", "input vector(dim=4)"),  # the shapes
    ],
)
def test_architecture_changes_change_it(old, new):
    assert old in BASE
    assert _arch(BASE.replace(old, new)) != _arch(BASE)


def test_layer_order_matters():
    text = "flow f { input vector(dim=2) LAYERS prior gaussian }"
    a = _arch(text.replace("LAYERS", "actnorm coupling(hidden=8)"))
    b = _arch(text.replace("LAYERS", "coupling(hidden=8) actnorm"))
    assert a != b


def test_spike_slab_anneal_is_part_of_it():
    text = "flow f { input vector(dim=2) actnorm prior spike_slab(spike=0.1, anneal=ANNEAL) }"
    assert _arch(text.replace("ANNEAL", "10")) != _arch(text.replace("ANNEAL", "20"))


def test_the_form_of_a_small_flow():
    """The documented form, written out by hand for a two-layer flow (defaults filled in)."""
    spec = flowdsl.parse("flow v { input vector(dim=2) actnorm coupling(hidden=8) prior gaussian }")
    want = {
        "format": "flowdsl-architecture/1",
        "input": {"kind": "vector", "shape": [2], "levels": None},
        "dequantize": "none",
        "layers": [
            {"kind": "actnorm", "args": {}, "in": [2], "out": [2]},
            {
                "kind": "coupling",
                "args": {"kind": "affine", "hidden": 8, "net": "mlp", "depth": 2, "mask": "channel"},
                "in": [2],
                "out": [2],
            },
        ],
        "latents": [[2]],
        "prior": {"name": "gaussian", "args": {"learned": False}},
        "objective": {"name": "mle", "args": {}},
    }
    assert canonical_form(spec) == want
    assert json.loads(canonical_text(spec)) == want
    import hashlib

    assert architecture_sha256(spec) == hashlib.sha256(canonical_text(spec).encode()).hexdigest()


def test_composite_bodies_and_split_latents_are_in_it():
    rg = (ROOT / "specs" / "rgflow_digits.flow").read_text()
    form = canonical_form(flowdsl.parse(rg))
    bodies = form["layers"][0]["bodies"]
    assert [label for label, _ in bodies][:2] == ["level0.disentangler", "level0.decimator"]
    assert bodies[0][1][1]["kind"] == "coupling" and bodies[0][1][1]["in"] == [1, 2, 2]
    deeper = re.sub(r"(decimator\s*\{\s*repeat )2", r"\g<1>3", rg, count=1)
    assert deeper != rg and _arch(deeper) != _arch(rg)
    glow = (ROOT / "specs" / "glow_digits.flow").read_text()
    form = canonical_form(flowdsl.parse(glow))
    assert len(form["latents"]) == 2 and any("latent" in layer for layer in form["layers"])


def test_every_bundled_spec_has_a_fingerprint_and_no_torch_is_imported():
    code = (
        "import sys, flowdsl\n"
        "from flowdsl.compiler.canonical import architecture_sha256\n"
        "hs = [architecture_sha256(flowdsl.load(p)) for p in sys.argv[1:]]\n"
        "print(len(set(hs)), len(hs), 'torch' in sys.modules)\n"
    )
    specs = sorted(str(p) for p in (ROOT / "specs").glob("*.flow"))
    out = subprocess.run([sys.executable, "-c", code, *specs], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    distinct, total, torch_loaded = out.stdout.split()
    assert int(distinct) == int(total) == len(specs) and torch_loaded == "False"


def test_an_unset_optional_argument_is_not_part_of_the_identity():
    """A kind that gains an optional argument (coupling's bins/bound for kind=spline) keeps the
    identity of every spec that does not use it."""
    text = "flow f { input vector(dim=2) coupling(hidden=8, mask=channel) prior gaussian }"
    form = canonical_form(flowdsl.parse(text))
    args = form["layers"][0]["args"]
    assert "bins" not in args and "bound" not in args and args["net"] == "mlp"  # resolved from the input
    spline = canonical_form(flowdsl.parse(text.replace("hidden=8", "kind=spline, hidden=8")))
    assert spline["layers"][0]["args"]["bins"] == 8
    explicit = canonical_form(flowdsl.parse(text.replace("hidden=8", "kind=spline, bins=8, hidden=8, net=mlp")))
    assert explicit == spline
