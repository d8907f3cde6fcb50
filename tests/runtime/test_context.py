"""runtime/context.py: the encoder, context_features against torch's own pooling/upsampling, and
validation (every bad context is a ContextError naming the declaration, never a torch error)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ctxtest import INFOS, info

from flowdsl.compiler.context import CONTEXT_EMBED, encoder_param_count
from flowdsl.errors import ContextError, FlowDSLError
from flowdsl.runtime.context import ContextEncoder, ContextValue, check_context, context_features, encode


class _Spec:
    def __init__(self, **kw):
        self.__dict__.update(kw)


@pytest.mark.parametrize(
    "spec",
    [_Spec(kind="label", classes=7), _Spec(kind="vector", dim=5), _Spec(kind="image", channels=3, height=4, width=6)],
    ids=["label", "vector", "image"],
)
def test_encoder_shapes_and_parameter_count(spec):
    inf = info(spec.kind, **{k: v for k, v in spec.__dict__.items() if k != "kind"})
    enc = ContextEncoder(inf)
    assert sum(p.numel() for p in enc.parameters()) == encoder_param_count(spec)
    raw = torch.randint(0, 7, (2,)) if spec.kind == "label" else torch.randn(2, *inf.shape)
    emb = enc(raw)
    expect = (2, CONTEXT_EMBED) if spec.kind != "image" else (2, CONTEXT_EMBED, 4, 6)
    assert emb.shape == expect


def test_context_features_against_torch_resizing():
    emb = torch.randn(2, 5, 4, 8, dtype=torch.float64)
    cv = ContextValue(torch.zeros(2), emb)
    # same size: unchanged; pooled: avg_pool2d; upsampled: nearest interpolation; mixed per axis
    assert torch.equal(context_features(cv, (3, 4, 8)), emb)
    assert torch.allclose(context_features(cv, (3, 2, 2)), F.avg_pool2d(emb, (2, 4)), atol=1e-15)
    assert torch.equal(context_features(cv, (3, 8, 16)), F.interpolate(emb, size=(8, 16), mode="nearest"))
    mixed = F.interpolate(F.avg_pool2d(emb, (2, 1)), size=(2, 16), mode="nearest")
    assert torch.allclose(context_features(cv, (3, 2, 16)), mixed, atol=1e-15)
    # vector layers read the spatial mean; vector embeddings broadcast over image layers
    assert torch.allclose(context_features(cv, (6,)), emb.mean(dim=(2, 3)), atol=1e-15)
    v = torch.randn(2, 5)
    out = context_features(ContextValue(torch.zeros(2), v), (1, 3, 2))
    assert out.shape == (2, 5, 3, 2) and torch.equal(out[:, :, 2, 1], v)


BAD = [
    ("label", None, "no context was given"),
    ("label", torch.tensor([0.0, 1.0, 2.0, 1.0]), "float32 tensor"),
    ("label", torch.tensor([True, False, True, True]), "bool tensor"),
    ("label", torch.tensor([[0, 1], [1, 2]]), "shape (2, 2)"),
    ("label", torch.tensor([0, 1, 3, 1]), "label 3, outside 0…2"),
    ("label", torch.tensor([0, -1, 2, 1]), "label -1, outside 0…2"),
    ("label", torch.tensor([0, 1]), "batch of 2 contexts for 4 examples"),
    ("label", "three", "not a tensor"),
    ("vector", torch.tensor([[1, 2, 3]] * 4), "int64 tensor"),
    ("vector", torch.randn(4, 2), "shape (4, 2)"),
    ("vector", torch.randn(3), "shape (3,)"),
    ("image", torch.randn(4, 2, 4), "shape (4, 2, 4)"),
    ("image", torch.randn(4, 2, 4, 5), "shape (4, 2, 4, 5)"),
    ("image", torch.randn(4, 1, 4, 4), "shape (4, 1, 4, 4)"),
]


@pytest.mark.parametrize("kind,ctx,words", BAD, ids=[f"{k}-{w}" for k, _, w in BAD])
def test_bad_context_is_a_context_error_naming_the_declaration(kind, ctx, words):
    inf = INFOS[kind]
    if kind == "vector" and ctx is not None and ctx.shape == (3,):
        ctx = torch.randn(5)  # one example of the wrong length
        words = "shape (5,)"
    with pytest.raises(ContextError) as e:
        check_context(inf, ctx, 4, torch.device("cpu"), torch.float64)
    msg = str(e.value)
    assert isinstance(e.value, FlowDSLError)
    assert inf.declared in msg and words in msg, msg


def test_superfluous_context():
    with pytest.raises(ContextError, match="declares no context"):
        check_context(None, torch.tensor([1]), 4, torch.device("cpu"), torch.float64)
    assert check_context(None, None, 4, torch.device("cpu"), torch.float64) is None


@pytest.mark.parametrize("kind", ["label", "vector", "image"])
def test_one_example_or_batch_one_broadcasts(kind):
    inf = INFOS[kind]
    enc = ContextEncoder(inf).double()
    one = torch.tensor(2) if kind == "label" else torch.randn(*inf.shape, dtype=torch.float64)
    full = one.unsqueeze(0).expand(5, *one.shape)
    ref = encode(inf, enc, full, 5, torch.device("cpu"), torch.float64)
    for given in (one, one.unsqueeze(0)):
        cv = encode(inf, enc, given, 5, torch.device("cpu"), torch.float64)
        assert torch.equal(cv.raw, ref.raw) and torch.allclose(cv.embedding, ref.embedding, atol=1e-14, rtol=0)
        assert cv.embedding.shape[0] == 5
    if kind == "label":  # a Python int and int32 labels are accepted too
        assert torch.equal(encode(inf, enc, 2, 5, torch.device("cpu"), torch.float64).raw, ref.raw)
        raw32 = check_context(inf, torch.tensor([0, 2], dtype=torch.int32), 2, torch.device("cpu"), torch.float64)
        assert raw32.dtype == torch.long
    else:  # float32 contexts follow the model's dtype
        raw = check_context(inf, one.float(), 5, torch.device("cpu"), torch.float64)
        assert raw.dtype == torch.float64


def test_a_context_error_points_at_the_declaration_in_the_spec_file(tmp_path):
    import flowdsl

    path = tmp_path / "labels.flow"
    path.write_text(
        "flow labels {\n  input vector(dim=2)\n  context label(classes=4)\n  coupling(hidden=4)\n}\n", encoding="utf-8"
    )
    model = flowdsl.compile(flowdsl.load(path))
    with pytest.raises(ContextError) as err:
        model.log_prob(torch.zeros(3, 2), context=torch.tensor([0, 4, 1]))
    e = err.value
    assert (e.filename, e.line, e.column) == (str(path), 3, 3), (e.filename, e.line, e.column)
    assert "got label 4, outside 0…3" in str(e)
