"""Data inputs: CSV files, in-memory arrays, value checks (complex, non-finite, constant), size
bounds read from headers (.npy, .npz members, images), announced conversions."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import flowdsl
from flowdsl.compiler.limits import LIMITS
from flowdsl.errors import DataError
from flowdsl.runtime.data import load_dataset, load_for_spec

_spec = importlib.util.spec_from_file_location("attacks", Path(__file__).with_name("attacks.py"))
attacks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(attacks)

VSPEC = "flow v { input vector(dim=3) actnorm prior gaussian }"


def _rows(n=40, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


# -- CSV ------------------------------------------------------------------------------------------


def test_csv_with_and_without_header_matches_the_numbers(tmp_path):
    x = _rows()
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(",".join(repr(float(v)) for v in r) for r in x) + "\n")
    header = tmp_path / "header.csv"
    header.write_text("a, b ,c\n# a comment\n\n" + plain.read_text())
    for p in (plain, header):
        tr = load_dataset(str(p), (3,), None, "train")
        te = load_dataset(str(p), (3,), None, "test")
        assert len(tr) + len(te) == 40 and tr.levels is None
        got = torch.cat([tr.x, te.x]).double()
        ref = torch.from_numpy(x)
        # every row of the file comes back once (the split only permutes)
        assert torch.allclose(got.sort(dim=0).values, ref.sort(dim=0).values, atol=1e-6)


def test_csv_bad_cell_is_located_by_row_and_column(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("x,y,z\n1,2,3\n4,five,6\n")
    with pytest.raises(DataError, match=r"row 3, column 2: 'five' is not a number") as e:
        load_dataset(str(p), (3,), None)
    assert e.value.filename == str(p)


def test_csv_ragged_rows_wrong_width_and_image_specs(tmp_path):
    p = tmp_path / "ragged.csv"
    p.write_text("1,2,3\n4,5\n")
    with pytest.raises(DataError, match="row 2 has 2 cells but the first row has 3"):
        load_dataset(str(p), (3,), None)
    q = tmp_path / "two.csv"
    q.write_text("1,2\n3,4\n5,7\n")
    with pytest.raises(DataError, match="rows have 2 numbers but the spec's input is a vector of 3"):
        load_dataset(str(q), (3,), None)
    with pytest.raises(DataError, match="CSV files hold vectors"):
        load_dataset(str(q), (1, 1, 2), 256)


def test_csv_size_is_checked_before_reading(tmp_path, monkeypatch):
    p = tmp_path / "big.csv"
    p.write_text("1,2,3\n" * 100)
    monkeypatch.setattr(LIMITS, "max_data_bytes", 1000)
    with pytest.raises(DataError, match="FLOWDSL_MAX_DATA_BYTES"):
        load_dataset(str(p), (3,), None)


def test_csv_is_in_the_data_table():
    from flowdsl.runtime.data.registry import data_formats

    assert any(".csv" in f.suffixes for f in data_formats())


# -- in-memory arrays ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["numpy", "torch", "dict"])
def test_in_memory_arrays_load_like_files(kind, tmp_path):
    spec = flowdsl.parse(VSPEC)
    x = _rows(50)
    data = {"numpy": x, "torch": torch.from_numpy(x), "dict": {"train": x[:45], "test": x[45:]}}[kind]
    tr = load_for_spec(spec, data, "train")
    te = load_for_spec(spec, data, "test")
    assert len(tr) == 45 and len(te) == 5
    np.save(tmp_path / "x.npy", x)
    if kind != "dict":  # the same rows as the file with the same array
        assert torch.equal(tr.x, load_dataset(str(tmp_path / "x.npy"), (3,), None, "train").x)


def test_train_accepts_a_numpy_array(tmp_path):
    from flowdsl.runtime.training import train

    spec = flowdsl.parse("flow v { input vector(dim=2) actnorm coupling(hidden=4) prior gaussian train(batch=8) }")
    x = _rows(60, 2)
    s = train(spec, data=x, steps=2, out=tmp_path / "run", quiet=True)
    assert s["data"].startswith("<array 60×2 sha256:")
    # the same array resumes (its label is its content's hash)
    s2 = train(spec, data=x.copy(), steps=3, out=tmp_path / "run", resume=True, quiet=True)
    assert s2["step"] == 3


def test_other_data_objects_are_a_data_error():
    spec = flowdsl.parse(VSPEC)
    with pytest.raises(DataError, match="not int"):
        load_for_spec(spec, 17, "train")


# -- value checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x: x.astype(np.complex128), "complex numbers"),
        (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x), "NaN or infinite"),
        (lambda x: np.full_like(x, 3.0), "is constant"),
        (lambda x: np.concatenate([x[:, :2], np.full((len(x), 1), 2.0)], axis=1), "1 constant dimension"),
        (lambda x: x * 1e300, "beyond float32"),
    ],
    ids=["complex", "nan", "constant", "constant-dim", "overflow"],
)
def test_unusable_values_are_refused_naming_the_file(tmp_path, make, message):
    p = tmp_path / "bad.npy"
    np.save(p, make(_rows()))
    with pytest.raises(DataError, match=message) as e:
        load_dataset(str(p), (3,), None)
    assert str(p) in str(e.value)


def test_constant_images_are_refused_but_constant_pixels_are_fine(tmp_path):
    x = np.zeros((20, 1, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "c.npy", x)
    with pytest.raises(DataError, match="is constant"):
        load_dataset(str(tmp_path / "c.npy"), (1, 4, 4), 256)
    x[:, 0, 1, 1] = np.arange(20)  # one varying pixel, the rest constant (like a digit's border)
    np.save(tmp_path / "d.npy", x)
    assert len(load_dataset(str(tmp_path / "d.npy"), (1, 4, 4), 256)) == 18


def test_constant_data_no_longer_trains_silently(tmp_path):
    from flowdsl.runtime.training import train

    spec = flowdsl.parse("flow v { input vector(dim=2) actnorm coupling(hidden=4) prior gaussian }")
    with pytest.raises(DataError, match="constant"):
        train(spec, data=np.ones((64, 2)), steps=2, out=tmp_path / "run", quiet=True)


# -- sizes from headers ------------------------------------------------------------------------------


def test_npy_header_claiming_more_than_the_file_is_refused(tmp_path):
    p = attacks.npy_claiming_rows(tmp_path / "x.npy", rows=1000, cols=3)  # fits the limit, no data
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset(str(p), (3,), None)


def test_npy_header_above_the_limit_is_refused_unread(tmp_path, monkeypatch):
    p = tmp_path / "x.npy"
    np.save(p, _rows(100))
    monkeypatch.setattr(LIMITS, "max_data_bytes", 1000)
    with pytest.raises(DataError, match=r"\(100, 3\) of float64 would take 2,400 bytes"):
        load_dataset(str(p), (3,), None)


def test_npz_member_sizes_come_from_the_zip_directory(tmp_path, monkeypatch):
    p = tmp_path / "x.npz"
    np.savez_compressed(p, x_train=np.zeros((1000, 3)) + np.arange(3), x_test=_rows(10))
    with zipfile.ZipFile(p) as z:
        total = sum(i.file_size for i in z.infolist())
    monkeypatch.setattr(LIMITS, "max_data_bytes", total - 1)
    with pytest.raises(DataError, match="archive's members"):
        load_dataset(str(p), (3,), None)
    monkeypatch.setattr(LIMITS, "max_data_bytes", total)
    with pytest.raises(DataError, match="every example is the same"):  # read (and then judged) at the limit
        load_dataset(str(p), (3,), None)


def test_zip_bomb_is_refused_from_its_directory(tmp_path):
    p = attacks.zip_bomb_npz(tmp_path / "bomb.npz", gib=5.0)
    assert p.stat().st_size < 8_000_000
    with pytest.raises(DataError, match="5,368,709,248 bytes"):
        load_dataset(str(p), (2,), None)


# -- images -------------------------------------------------------------------------------------------


def test_image_size_is_read_from_the_header_before_decoding(tmp_path, monkeypatch):
    d = tmp_path / "imgs"
    d.mkdir()
    attacks.png_of_size(d / "a.png", 300, 200)
    import PIL.ImageFile

    def no_decoding(*a, **k):  # pragma: no cover - the point is that it is not called
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(DataError, match=r"1×200×300 but the spec's input is 1×8×8"):
        load_dataset(str(d), (1, 8, 8), 256)
    monkeypatch.setattr(LIMITS, "max_image_pixels", 1000)
    with pytest.raises(DataError, match="300×200 pixels is above the limit of 1,000 pixels"):
        load_dataset(str(d), (1, 8, 8), 256)


def test_rgb_to_grey_is_announced(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(6):
        attacks.png_of_size(d / f"c{i}.png", 8, 8, "RGB", value=10 * i)
        attacks.png_of_size(d / f"g{i}.png", 8, 8, "L", value=10 * i + 5)
    ds = load_dataset(str(d), (1, 8, 8), 256, "train")
    notes = " ".join(ds.notes)
    assert "converted" in notes and "RGB → L" in notes and "to grey" in notes
    grey = load_dataset(str(d), (3, 8, 8), 256, "train")
    assert "L → RGB" in " ".join(grey.notes)
    only_grey = tmp_path / "grey"
    only_grey.mkdir()
    for i in range(3):
        attacks.png_of_size(only_grey / f"g{i}.png", 8, 8, "L", value=i)
    assert "converted" not in " ".join(load_dataset(str(only_grey), (1, 8, 8), 256, "train").notes)


def test_batch_larger_than_the_training_set_is_announced():
    from flowdsl.runtime.training.config import resolve_config
    from flowdsl.runtime.training.run_data import load_run_data

    spec = flowdsl.parse("flow v { input vector(dim=3) actnorm prior gaussian }")
    from flowdsl.runtime.data.arrays import remember_arrays

    cfg = resolve_config(spec, data=remember_arrays(_rows(50)), batch=256)
    run = load_run_data(spec, cfg)
    assert any("batch 256 is larger than the" in n for n in run.notes)
    cfg = resolve_config(spec, data=remember_arrays(_rows(50)), batch=8)
    assert not any("larger than" in n for n in load_run_data(spec, cfg).notes)


# -- corrupt files ---------------------------------------------------------------------------------


def test_idx_header_size_is_checked_before_the_body_is_read(tmp_path, monkeypatch):
    from flowdsl.runtime.data import idx

    d = tmp_path / "idx"
    d.mkdir()
    idx.write_idx(d / "train-images-idx3-ubyte.gz", np.zeros((2000, 28, 28), np.uint8))
    monkeypatch.setattr(LIMITS, "max_data_bytes", 1_000_000)
    with pytest.raises(DataError, match=r"promises \(2000, 28, 28\).*FLOWDSL_MAX_DATA_BYTES"):
        idx.read_idx(d / "train-images-idx3-ubyte.gz")


def _mutations(raw: bytes, rng, k: int):
    for i in range(k):
        b = bytearray(raw)
        op = i % 4
        if op == 0:
            b = b[: rng.randrange(len(b))]
        elif op == 1:
            for _ in range(rng.randint(1, 10)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:
            at = rng.randrange(len(b) + 1)
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        else:
            b = bytearray(rng.randbytes(rng.randint(0, 300)))
        yield bytes(b)


def test_corrupt_data_files_are_data_errors(tmp_path):
    """Truncated, bit-flipped, spliced and random files of every format: a DataError or a load,
    never another exception (numpy's header tokenizer, PIL's SyntaxError, ...)."""
    import random

    from PIL import Image

    from flowdsl.runtime.data import idx

    rng = random.Random(0)
    x = np.random.default_rng(0).normal(size=(30, 3))
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "a.npz", x=x)
    (tmp_path / "a.csv").write_text("\n".join(",".join(str(v) for v in r) for r in x))
    (tmp_path / "img").mkdir()
    for i in range(3):
        Image.fromarray((np.arange(64).reshape(8, 8) * (i + 1)).astype(np.uint8)).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "idx").mkdir()
    idx.write_idx(tmp_path / "idx" / "train-images-idx3-ubyte.gz", np.arange(640).reshape(10, 8, 8).astype(np.uint8))
    cases = {
        "a.npy": ("a.npy", (3,), None),
        "a.npz": ("a.npz", (3,), None),
        "a.csv": ("a.csv", (3,), None),
        "img/0.png": ("img", (1, 8, 8), 256),
        "idx/train-images-idx3-ubyte.gz": ("idx", (1, 8, 8), 256),
    }
    for file, (target, shape, levels) in cases.items():
        raw = (tmp_path / file).read_bytes()
        for b in _mutations(raw, rng, 40):
            (tmp_path / file).write_bytes(b)
            try:
                load_dataset(str(tmp_path / target), shape, levels, "train")
            except DataError:
                pass
        (tmp_path / file).write_bytes(raw)


@pytest.mark.parametrize("path", ["a\x00b.npy", "x" * 5000 + ".npy"])
def test_odd_paths_are_data_errors(path):
    with pytest.raises(DataError):
        load_dataset(path, (3,), None)
