"""Natural-image patches (C×H×W crops) from the photographs bundled with scikit-image.

The photos are read straight from the files shipped inside the ``skimage.data`` package (never
through its download helpers), so nothing touches the network. RGB specs (C=3) use the colour
photos; grey specs (C=1) use the grey photos plus the luma (ITU-R 601) of the colour ones.

Deterministic split and crops (independent of the run's seed):
    * every photo is cut at 80 % of its width: crops of the **train** split lie entirely in the
      left part, crops of the **test** split entirely in the right part, so no pixel is shared;
    * crop positions come from ``numpy.random.Generator(PCG64(1234 + photo index))`` (train)
      and ``PCG64(5678 + photo index)`` (test); each photo gives the same number of crops;
    * sizes: 24,000 train and 4,000 test crops by default (``n`` overrides).
Values are the raw 8-bit values 0…255 (``levels=256``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from flowdsl.errors import DataError
from flowdsl.runtime.data.base import Dataset, as_dataset
from flowdsl.runtime.data.registry import DataRequest, register_dataset

__all__ = ["RGB_PHOTOS", "GREY_PHOTOS", "photo_dir", "load_photos", "patch_arrays", "load_patches"]

RGB_PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "ihc.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "motorcycle_left.png",
)
GREY_PHOTOS = ("camera.png", "coins.png", "moon.png", "grass.png", "gravel.png", "brick.png", "clock_motion.png")
TRAIN_FRACTION = 0.8
DEFAULT_N = {"train": 24_000, "test": 4_000}


def photo_dir() -> Path:
    import skimage.data

    return Path(os.path.dirname(skimage.data.__file__))


@functools.lru_cache(maxsize=2)
def load_photos(channels: int) -> tuple[np.ndarray, ...]:
    """The photos as uint8 arrays (H, W, C) for ``channels`` 1 or 3 (missing files are skipped)."""
    from PIL import Image

    if channels not in (1, 3):
        raise DataError(f"natural-image patches exist for 1 or 3 channels, not {channels}", filename="patches")
    d = photo_dir()
    out = []
    names = RGB_PHOTOS if channels == 3 else GREY_PHOTOS + RGB_PHOTOS
    for name in names:
        p = d / name
        if not p.is_file():
            continue
        with Image.open(p) as im:
            if name in RGB_PHOTOS and channels == 1:
                im = im.convert("RGB").convert("L")
            else:
                im = im.convert("RGB" if channels == 3 else "L")
            a = np.asarray(im, dtype=np.uint8)
        out.append(a.reshape(a.shape[0], a.shape[1], channels))
    if not out:
        raise DataError(f"no scikit-image photos found in {d}", filename="patches")
    return tuple(out)


def patch_arrays(shape, split: str = "train", n: int | None = None) -> np.ndarray:
    """Crops (n, C, H, W) uint8 of ``split`` for ``shape`` = (C, H, W)."""
    c, h, w = (int(s) for s in shape)
    photos = load_photos(c)
    n = DEFAULT_N[split] if n is None else int(n)
    per = -(-n // len(photos))
    out = np.empty((per * len(photos), c, h, w), dtype=np.uint8)
    k = 0
    for i, img in enumerate(photos):
        ph, pw = img.shape[:2]
        cut = int(round(TRAIN_FRACTION * pw))
        lo, hi = (0, cut) if split == "train" else (cut, pw)
        if hi - lo < w or ph < h:
            raise DataError(
                f"patches of {h}×{w} do not fit the {split} part ({ph}×{hi - lo}) of a bundled photo",
                filename="patches",
            )
        rng = np.random.Generator(np.random.PCG64((1234 if split == "train" else 5678) + i))
        ys = rng.integers(0, ph - h + 1, size=per)
        xs = rng.integers(lo, hi - w + 1, size=per)
        for y0, x0 in zip(ys, xs):
            out[k] = img[y0 : y0 + h, x0 : x0 + w].transpose(2, 0, 1)
            k += 1
    # interleave photos so that any prefix mixes all of them (order fixed by a permutation)
    perm = np.random.Generator(np.random.PCG64(99)).permutation(len(out))[:n]
    return out[perm]


def load_patches(input_shape, levels, split: str = "train", n: int | None = None) -> Dataset:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        raise DataError(
            f"natural-image patches are images; the spec's input is a vector of shape {shape}", filename="patches"
        )
    arr = patch_arrays(shape, split, n)
    return as_dataset(
        "patches",
        arr,
        input_shape=input_shape,
        levels=levels,
        data_levels=256,
        split=split,
        notes=[
            f"{len(arr)} natural-image crops {shape[0]}×{shape[1]}×{shape[2]} from scikit-image photos ({split} region)"
        ],
    )


@register_dataset(
    "patches",
    kind="image",
    aliases=("photos",),
    description="crops of scikit-image's bundled photos, C×H×W of the spec (C = 1 or 3), 256 levels",
)
def _patches(req: DataRequest) -> Dataset:
    return load_patches(req.shape, req.levels, req.split, n=req.n)
