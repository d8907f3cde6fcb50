"""Data with contexts: what ``load_for_spec`` gives a spec that declares ``context`` (labels of
digits, IDX folders, class subfolders and arrays; vector and image contexts of arrays; the derived
low-resolution context), the errors that name the file, and unconditional specs left as they were.

Specs here are stand-ins (``SimpleNamespace`` with the fields ``load_for_spec`` reads: ``input``,
``context`` as ``FlowSpec.context`` has them, ``train``), so the data side is tested on its own."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flowdsl.errors import DataError
from flowdsl.runtime.data import load_for_spec


def _spec(shape, levels=None, context=None, data=None):
    kind = "image" if len(shape) == 3 else "vector"
    return SimpleNamespace(
        input=SimpleNamespace(kind=kind, shape=tuple(shape), levels=levels),
        context=context,
        train=SimpleNamespace(data=data, seed=0, arg_spans={}),
        filename="<test>",
        source="",
    )


def label(k):
    return SimpleNamespace(kind="label", classes=k, shape=())


def vector(d):
    return SimpleNamespace(kind="vector", dim=d, shape=(d,))


def image(c, h, w):
    return SimpleNamespace(kind="image", channels=c, height=h, width=w, shape=(c, h, w))


def test_digits_labels_are_the_label_context():
    from sklearn.datasets import load_digits

    ref = load_digits()
    for split in ("train", "test"):
        ds = load_for_spec(_spec((1, 8, 8), 17, label(10)), "digits", split)
        assert ds.context.dtype == torch.int64 and ds.context.shape == (len(ds),)
        # independent: every image's label is sklearn's target of an identical image
        images = ref.images.reshape(len(ref.images), -1)
        for i in range(0, len(ds), 37):
            row = ds.x[i].reshape(-1).numpy()
            match = np.flatnonzero((images == row).all(1))
            assert int(ds.context[i]) in set(ref.target[match].tolist())
        assert any("context label(classes=10)" in n for n in ds.notes)


def test_unconditional_specs_get_no_context_and_the_same_data(tmp_path):
    f = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(f, x=rng.normal(size=(50, 2)), context=rng.normal(size=(50, 3)), y=rng.integers(0, 4, 50))
    a = load_for_spec(_spec((2,)), str(f))
    assert a.context is None
    np.savez(tmp_path / "plain.npz", x=np.load(f)["x"])
    b = load_for_spec(_spec((2,)), str(tmp_path / "plain.npz"))
    assert torch.equal(a.x, b.x)
    d = load_for_spec(_spec((1, 8, 8), 17), "digits")
    assert d.context is None and d.labels is not None


def test_label_out_of_range_and_missing_labels_name_the_file(tmp_path):
    with pytest.raises(DataError) as e:
        load_for_spec(_spec((1, 8, 8), 17, label(5)), "digits")
    assert "outside 0..4" in e.value.message and "context label(classes=5)" in e.value.message
    assert e.value.filename == "digits"
    f = tmp_path / "x.npy"
    np.save(f, np.random.default_rng(0).normal(size=(20, 2)))
    with pytest.raises(DataError, match="no .*labels.*context label") as e:
        load_for_spec(_spec((2,), context=label(3)), str(f))
    assert e.value.filename == str(f)
    g = tmp_path / "frac.npz"
    np.savez(g, x=np.random.default_rng(0).normal(size=(20, 2)), y=np.linspace(0, 1, 20))
    with pytest.raises(DataError, match="not integers"):
        load_for_spec(_spec((2,), context=label(3)), str(g))


def test_npz_label_vector_and_image_contexts_follow_the_split(tmp_path):
    rng = np.random.default_rng(1)
    n = 40
    x = rng.normal(size=(n, 2))
    y = np.arange(n) % 4
    f = tmp_path / "l.npz"
    np.savez(f, x=np.column_stack([y, x[:, 1]]), y=y)
    for split in ("train", "test"):
        ds = load_for_spec(_spec((2,), context=label(4)), str(f), split)
        assert torch.equal(ds.context, ds.x[:, 0].long())  # rows stay paired through the split
    v = tmp_path / "v.npz"
    c = rng.normal(size=(n, 3))
    np.savez(v, x=np.column_stack([c[:, 0], x[:, 1]]), context=c)
    ds = load_for_spec(_spec((2,), context=vector(3)), str(v), "test")
    assert ds.context.dtype == torch.float32 and ds.context.shape == (len(ds), 3)
    torch.testing.assert_close(ds.context[:, 0], ds.x[:, 0])
    with pytest.raises(DataError, match=r"shape 3 .*context vector\(dim=2\)"):
        load_for_spec(_spec((2,), context=vector(2)), str(v))
    # split layout with paired image contexts, channels-last accepted
    s = tmp_path / "s.npz"
    xi = rng.integers(0, 17, size=(30, 1, 8, 8))
    ci = rng.normal(size=(30, 4, 4, 1))
    np.savez(s, x_train=xi[:20], x_test=xi[20:], context_train=ci[:20], context_test=ci[20:])
    ds = load_for_spec(_spec((1, 8, 8), 17, image(1, 4, 4)), str(s), "test")
    np.testing.assert_allclose(ds.context.numpy(), np.moveaxis(ci[20:], -1, 1).astype(np.float32))
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=xi, context=np.full((30, 1, 4, 4), np.nan))
    with pytest.raises(DataError, match="NaN") as e:
        load_for_spec(_spec((1, 8, 8), 17, image(1, 4, 4)), str(bad))
    assert e.value.filename == str(bad)
    short = tmp_path / "short.npz"
    np.savez(short, x=xi, context=ci[:10])
    with pytest.raises(DataError, match="shape") as e:
        load_for_spec(_spec((1, 8, 8), 17, image(1, 4, 4)), str(short))
    assert "10" in e.value.message and "30" in e.value.message


def test_in_memory_dict_with_labels():
    x = np.random.default_rng(0).normal(size=(30, 2))
    ds = load_for_spec(_spec((2,), context=label(3)), {"x": x, "labels": np.arange(30) % 3}, "train")
    assert ds.context.shape == (len(ds),) and int(ds.context.max()) <= 2


def test_image_folder_classes_number_both_splits_alike(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    # train has classes a, b, c; test only b and c: "b" must be class 1 in both
    for split, classes in (("train", "abc"), ("test", "bc")):
        for cls in classes:
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                a = np.full((4, 4), 60 * ("abc".index(cls) + 1), np.uint8)
                a[0, 0] = rng.integers(0, 255)
                Image.fromarray(a, "L").save(d / f"{i}.png")
    spec = _spec((1, 4, 4), 256, label(3))
    for split in ("train", "test"):
        ds = load_for_spec(spec, str(tmp_path), split)
        want = (ds.x[:, 0, 1, 1] / 60).long() - 1  # the class is written in the pixels
        assert torch.equal(ds.context, want)
    with pytest.raises(DataError, match="outside 0..1"):
        load_for_spec(_spec((1, 4, 4), 256, label(2)), str(tmp_path), "train")
    loose = tmp_path / "loose"
    (loose / "a").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((4, 4), i, np.uint8), "L").save(loose / ("a" if i else "") / f"{i}.png")
    with pytest.raises(DataError, match="not in a class subfolder"):
        load_for_spec(spec, str(loose), "train")


def test_idx_folder_labels(tmp_path):
    from flowdsl.runtime.data.idx import write_idx

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        img = np.zeros((n, 28, 28), np.uint8)
        img[:, 0, 0] = y * 20  # the label, readable from the image
        img[:, 5, 5] = rng.integers(0, 255, n)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", img)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", y)
    ds = load_for_spec(_spec((1, 28, 28), 256, label(10)), str(tmp_path), "test")
    assert torch.equal(ds.context, (ds.x[:, 0, 0, 0] / 20).long())
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="no labels"):
        load_for_spec(_spec((1, 28, 28), 256, label(10)), str(tmp_path), "test")


def test_lowres_context_is_the_block_mean_on_the_bin_centre_scale():
    spec = _spec((1, 8, 8), 17, image(1, 4, 4))
    ds = load_for_spec(spec, "digits+lowres", "test")
    ref = (torch.nn.functional.avg_pool2d(ds.x.double(), 2) + 0.5) / 17  # independent: torch's pooling
    torch.testing.assert_close(ds.context.double(), ref, rtol=0, atol=1e-6)
    assert ds.context.shape == (297, 1, 4, 4) and any("+lowres" in n for n in ds.notes)
    two = load_for_spec(_spec((1, 8, 8), 17, image(1, 2, 4)), "digits+lowres", "test")
    ref2 = (torch.nn.functional.avg_pool2d(ds.x.double(), (4, 2)) + 0.5) / 17
    torch.testing.assert_close(two.context.double(), ref2, rtol=0, atol=1e-6)
    with pytest.raises(DataError, match="derives a context, but the spec declares none"):
        load_for_spec(_spec((1, 8, 8), 17), "digits+lowres")
    with pytest.raises(DataError, match="does not divide"):
        load_for_spec(_spec((1, 8, 8), 17, image(1, 3, 3)), "digits+lowres")
    with pytest.raises(DataError, match="derives a context image"):
        load_for_spec(_spec((1, 8, 8), 17, label(10)), "digits+lowres")
    with pytest.raises(DataError, match="no context array.*\\+lowres"):
        load_for_spec(spec, "digits")


def test_conditional_toy_density_is_exact_and_its_samples_follow_it():
    from scipy.stats import multivariate_normal

    from flowdsl.runtime.data.ctoy2d import (
        conditional_entropy,
        conditional_log_density,
        sample_conditional_toy,
    )

    x, c = sample_conditional_toy("rotated_gaussian", 4000, seed=3)
    assert x.shape == (4000, 2) and c.shape == (4000, 1) and np.abs(c).max() <= 1
    lp = conditional_log_density("rotated_gaussian", x, c)
    for i in range(0, 4000, 400):  # independent: scipy's Gaussian with the covariance written out
        t = np.pi * c[i, 0] / 2
        r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        cov = r @ np.diag([1.0, 0.0625]) @ r.T
        ref = multivariate_normal(mean=[2 * c[i, 0], c[i, 0] ** 2], cov=cov).logpdf(x[i])
        assert abs(lp[i] - ref) < 1e-10
    # the samples follow the density: mean of -log p matches the closed-form entropy (MC, 4000 draws)
    h = conditional_entropy("rotated_gaussian")
    assert abs(h - np.log(2 * np.pi * np.e * 0.25)) < 1e-12
    assert abs(-lp.mean() - h) < 4 * lp.std() / np.sqrt(len(lp))
    ds = load_for_spec(_spec((2,), context=vector(1)), "rotated_gaussian", "test", seed=3)
    assert ds.context.shape == (5000, 1) and len(ds) == 5000
    with pytest.raises(DataError, match="not integers"):
        load_for_spec(_spec((2,), context=label(2)), "rotgauss", "test")
