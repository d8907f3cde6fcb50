"""Static structure of the emerging-conv inverse: what a quadrant conv reads, tile levels, tile choice.

Helper of :mod:`flowdsl.runtime.layers.emerging_conv` (not a kind); the solve itself is in
:mod:`flowdsl.runtime.layers._emerging_solver`. Nothing here depends on weight values.

Notation: image C×H×W, kernel k odd, c = (k−1)/2. A quadrant AR conv reads, at pixel (i, j), the
pixels (i+dh, j+dw) for the offsets of :func:`quadrant_offsets` (``br``: dh, dw ∈ [0, c];
``tl``: dh, dw ∈ [−c, 0]; (0, 0) excluded, its dependency is inside the pixel).

Tiles. The image is cut into an ni×nj grid of Th×Tw tiles (ni = ⌈H/Th⌉, nj = ⌈W/Tw⌉). Tile
(I, J) depends on tile (I + ⌊(r+dh)/Th⌋, J + ⌊(s+dw)/Tw⌋) for r < Th, s < Tw and every offset;
for a quadrant mask this graph is a DAG, and :func:`tile_levels` gives every tile its level,
the longest dependency path to it. Tiles of one level are solved together, so the number of
levels L is the number of sequential steps of one AR solve. With 1×1 tiles this is the pixel
wavefront (L = H+W−1, the dependency depth of the quadrant mask); a whole-image tile is the
dense inverse (L = 1).

Tile choice. :func:`choose_tile` picks the tile by a CPU cost model (fewer levels against a
denser in-tile solve: for batch 64 the tiles end up with C·Th·Tw ≈ 48 unknowns, which measured
1.5× faster than 192-unknown tiles with half the levels); pass ``tile=`` to
:class:`~flowdsl.runtime.layers.emerging_conv.EmergingConv` for fewer sequential steps (e.g. on
a GPU, where a level costs more than arithmetic).

Sequential steps (levels per AR conv; the emerging inverse runs two AR solves), k = 3:

    input      tile (unknowns)   levels per AR conv   emerging inverse   pixel wavefront 2·(H+W−1)   naive 2·H·W
    3×8×8      8×8 (192)                 1                   2                    30                    128
    3×32×32    4×4 (48)                 15                  30                   126                   2048
    3×64×64    4×4 (48)                 31                  62                   254                   8192
    12×16×16   2×2 (48)                 15                  30                    62                    512
    3×32×32    8×8 (192, tile=(8, 8))    7                  14                   126                   2048

``EmergingConv.steps()`` reports the numbers for a built layer; ``python -m
flowdsl.runtime.bench.convs`` prints them with the timings (benchmarks/convs.md).
"""

from __future__ import annotations

import numpy as np

__all__ = ["quadrant_offsets", "tile_levels", "choose_tile"]


# --------------------------------------------------------------------------- static structure
def quadrant_offsets(k: int, direction: str) -> list[tuple[int, int]]:
    """Pixel offsets (dh, dw) ≠ (0, 0) read by a quadrant AR conv (``br``: +, ``tl``: −)."""
    c = (k - 1) // 2
    s = 1 if direction == "br" else -1
    return [(s * a, s * b) for a in range(c + 1) for b in range(c + 1) if (a, b) != (0, 0)]


def tile_levels(offsets: list[tuple[int, int]], th: int, tw: int, ni: int, nj: int) -> np.ndarray:
    """Level of every tile of an ni×nj grid of th×tw tiles: the longest dependency path.

    A pixel p depends on p + (dh, dw) for each offset; tile (I, J) therefore depends on the tiles
    (I + ⌊(r+dh)/th⌋, J + ⌊(s+dw)/tw⌋), r < th, s < tw. Level 0 tiles have no dependency inside
    the grid; a tile's level is 1 + the largest level of its dependencies. Raises on a cycle.
    """
    toffs: set[tuple[int, int]] = set()
    for dh, dw in offsets:
        rows = {(r + dh) // th for r in range(th)}
        cols = {(s + dw) // tw for s in range(tw)}
        toffs.update((a, b) for a in rows for b in cols if (a, b) != (0, 0))
    lev = np.zeros((ni, nj), dtype=np.int64)
    for _ in range(ni * nj + 2):
        new = np.zeros_like(lev)
        for a, b in toffs:
            i0, i1 = max(0, -a), min(ni, ni - a)
            j0, j1 = max(0, -b), min(nj, nj - b)
            if i0 >= i1 or j0 >= j1:
                continue
            src = lev[i0 + a : i1 + a, j0 + b : j1 + b] + 1
            new[i0:i1, j0:j1] = np.maximum(new[i0:i1, j0:j1], src)
        if np.array_equal(new, lev):
            return lev
        lev = new
    raise ValueError("the mask's dependency graph has a cycle")  # pragma: no cover


#: cost model of the inverse on the CPU (fitted on this project's benchmark machine, float32,
#: 1 thread): ``LEVEL_MS`` per sequential level (gathers, one small matmul, concat, Python) and
#: ``MMAC_MS`` per million multiply-adds of the in-tile solve Z = D⁻¹Y, for a batch of ``BATCH``.
LEVEL_MS, MMAC_MS, BATCH = 0.06, 0.04, 64


def choose_tile(c: int, h: int, w: int, k: int = 3) -> tuple[int, int]:
    """The tile (Th, Tw) of the inverse: the power-of-two square (clipped to H, W) or the whole
    image minimising the modelled time  L(T)·LEVEL_MS + BATCH·C·H·W·(C·T²)·1e-6·MMAC_MS,
    where L(T) is the number of levels. Larger tiles mean fewer sequential steps but more
    arithmetic (the in-tile inverse is dense); small images get one whole-image tile (one step).
    k = 1 has no spatial dependencies and uses 1×1 tiles (one level, a C×C inverse per pixel).
    """
    if k == 1:
        return 1, 1
    offs = quadrant_offsets(k, "br")
    cands = {(min(t, h), min(t, w)) for t in (1, 2, 4, 8, 16, 32, 64) if t < max(h, w)} | {(h, w)}
    best, best_cost = (h, w), float("inf")
    for th, tw in sorted(cands, key=lambda t: (-t[0] * t[1], t)):
        if c * th * tw > 4096:  # dense tile inverse of at most 4096² entries
            continue
        levels = int(tile_levels(offs, th, tw, -(-h // th), -(-w // tw)).max()) + 1
        cost = levels * LEVEL_MS + BATCH * c * h * w * c * th * tw * 1e-6 * MMAC_MS
        if cost < best_cost - 1e-12:
            best, best_cost = (th, tw), cost
    return best
