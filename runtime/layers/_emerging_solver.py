"""Exact inverse of the emerging conv's quadrant AR convs: a static tiled wavefront (no loop over pixels).

Helper of :mod:`flowdsl.runtime.layers.emerging_conv` (not a kind). The tile grid, the tile
levels and the tile choice come from :mod:`flowdsl.runtime.layers._emerging_tiles`.

Shapes: y (B, C, H, W) -> x (B, C, H, W) with ``_ar_conv(x, kernel, direction) = y``; kernel
(C, C, q, q), q = (k+1)/2; ``br`` reads down/right with a channel-lower-triangular centre tap,
``tl`` up/left with an upper-triangular one.

Tiled wavefront (:class:`ARQuadrantSolver`).
    The image is cut into tiles of Th×Tw pixels (the last row/column of tiles is zero-padded on
    the side the dependencies point to; the padded unknowns depend only on padded unknowns and
    provably solve to 0). Restricted to one tile the conv is a matrix D of N = C·Th·Tw unknowns,
    triangular in the order "pixels against the dependency direction, channels against the
    centre triangle"; the coupling of a tile to the boundary unknowns of its neighbour tiles is
    a matrix B (N × K; for k = 3: one column, one row and one corner pixel of the neighbours).
    Both are gathered from the kernel by index maps derived once from the mask, and
    D⁻¹ (one float64 triangular solve) and G = D⁻¹B are computed per call (training form; cached
    while the weights do not change and autograd is off) or once (``frozen()``). The tile
    dependency graph is a DAG; its longest paths ("levels") are derived statically from the mask
    offsets by :func:`~flowdsl.runtime.layers._emerging_tiles.tile_levels`. Then

        Z = D⁻¹·Y                       for all tiles at once (one matmul)
        for level ℓ = 0 … L−1:  X_ℓ = Z_ℓ − G·X_bnd,ℓ     (the level's tiles, batched)

    where X_bnd,ℓ are the boundary unknowns of the neighbour tiles, gathered from the levels
    already solved (0 outside the image). Each tile is computed once, only from exact values, so
    the rounding is that of a blocked back-substitution with float64-exact block inverses; no
    iterate can grow (plain Jacobi sweeps x ← D⁻¹(y − off⋆x) overflow float32 for weights far
    from the identity), and the backward error stays at rounding level even when the map is
    badly conditioned (tests/runtime/layers/test_conv.py).

Emerging inverse (:func:`_emerging_inverse`): solve conv 2 (``tl``) then conv 1 (``br``).
    Per level: a slice of Z, a concat of the source levels' outputs, one gather, one matmul;
    plus one gather in (tiling, padding), one between the two solves (:func:`_link`) and one out
    (untiling, cropping). The frozen form exports to ONNX as this static unrolled schedule
    (Gather/MatMul/Concat/Sub); while exporting, the same arithmetic runs with the batch as the
    last axis so that every Gather selects rows (onnxruntime's Gather on axis 1 was 6× slower).
    :class:`_Schedule` holds a solver's index tensors as non-persistent module buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowdsl.runtime.fusion.ops.kernels import conv_act
from flowdsl.runtime.layers._emerging_tiles import choose_tile, quadrant_offsets, tile_levels

__all__ = ["ARQuadrantSolver"]


# --------------------------------------------------------------------------- numerics
def _ar_conv(x: Tensor, kernel: Tensor, direction: str, frozen: bool = False) -> Tensor:
    """The quadrant conv with zero padding: ``br`` pads bottom/right, ``tl`` top/left.

    ``frozen`` (weights are buffers): through ``conv_act`` — oneDNN on the CPU, which does not
    guard on the batch size under ``torch.compile(dynamic=True)``; F.conv2d otherwise."""
    c = kernel.shape[-1] - 1
    xp = x if c == 0 else F.pad(x, (0, c, 0, c) if direction == "br" else (c, 0, c, 0))
    if frozen:
        return conv_act(xp, kernel, None, 0, "none", None, None)
    return F.conv2d(xp, kernel)


class ARQuadrantSolver:
    """Static plan of the tiled wavefront solve of one quadrant AR conv on a C×H×W image.

    Everything here depends on the shape and the mask only (never on weight values): the tile
    grid, the level of each tile, the order in which tiles are solved, and for each tile offset
    o the unknowns of the neighbour tile that actually couple into a tile (for k = 3 and 8×8
    tiles: one boundary column, one boundary row and one corner pixel, 17·C of the 3·64·C).
    The weight-dependent part (:meth:`operators`) is D⁻¹ and G = D⁻¹·B, B the coupling of a tile
    to those boundary unknowns; the solve of level ℓ is then

        x_ℓ = D⁻¹·Y_ℓ − G·X_bnd,ℓ

    with Y_ℓ the level's tiles of y (N each) and X_bnd,ℓ their neighbours' boundary unknowns
    (K each), gathered from the levels solved before (zero outside the image).
    """

    def __init__(self, c: int, h: int, w: int, k: int, direction: str, tile: tuple[int, int] | None = None) -> None:
        # the plan is static data on the CPU, also when the layer is built under another
        # default device (the compiler counts parameters on the meta device)
        with torch.device("cpu"):
            self._plan(c, h, w, k, direction, tile)

    def _plan(self, c: int, h: int, w: int, k: int, direction: str, tile: tuple[int, int] | None) -> None:
        self.C, self.H, self.W, self.k, self.direction = c, h, w, k, direction
        th, tw = tile if tile is not None else choose_tile(c, h, w, k)
        th, tw = min(th, h), min(tw, w)
        self.th, self.tw = th, tw
        self.N = c * th * tw
        ni, nj = -(-h // th), -(-w // tw)
        self.ni, self.nj = ni, nj
        self.hp, self.wp = ni * th, nj * tw
        offsets = quadrant_offsets(k, direction)
        lev = tile_levels(offsets, th, tw, ni, nj)
        self.levels = lev
        self.n_levels = int(lev.max()) + 1
        # the image is zero-padded to whole tiles on the side the dependencies point to
        # (bottom/right for br, top/left for tl): the padded unknowns depend only on padded
        # unknowns, so with y = 0 there they solve to exactly 0 and never feed back
        ph, pw = self.hp - h, self.wp - w

        # --- coupling structure between a tile and its neighbours (from the mask) ---------
        q = (k - 1) // 2 + 1
        c_ = q - 1
        self.m = m = max(1, -(-c_ // min(th, tw))) if c_ > 0 else 0
        ptiles = 2 * m + 1
        struct = torch.ones(c, c, q, q, dtype=torch.float64)
        centre = (0, 0) if direction == "br" else (q - 1, q - 1)
        struct[:, :, centre[0], centre[1]] = (
            torch.tril(torch.ones(c, c, dtype=torch.float64))
            if direction == "br"
            else torch.triu(torch.ones(c, c, dtype=torch.float64))
        )
        self.tile_offsets: list[tuple[int, int]] = []
        self.coupled: list[list[int]] = []
        basis = []
        if m > 0:
            # adjoint of the (non-negative) structural conv applied to the centre tile's outputs:
            # positive exactly at the input unknowns that couple into the centre tile
            with torch.enable_grad():
                probe = torch.zeros(1, c, ptiles * th, ptiles * tw, dtype=torch.float64, requires_grad=True)
                out = _ar_conv(probe, struct, direction)[:, :, m * th : (m + 1) * th, m * tw : (m + 1) * tw]
                (grad,) = torch.autograd.grad(out.sum(), probe)
            dep = grad.reshape(c, ptiles, th, ptiles, tw) > 0
            for a in range(-m, m + 1):
                for b in range(-m, m + 1):
                    if (a, b) == (0, 0):
                        continue
                    blk = dep[:, m + a, :, m + b, :]  # (C, th, tw)
                    idx = torch.nonzero(blk.reshape(-1)).flatten().tolist()
                    if idx:
                        self.tile_offsets.append((a, b))
                        self.coupled.append(idx)
                        for n in idx:
                            e = torch.zeros(c, ptiles * th, ptiles * tw, dtype=torch.float64)
                            ch, r, s_ = n // (th * tw), (n // tw) % th, n % tw
                            e[ch, (m + a) * th + r, (m + b) * tw + s_] = 1.0
                            basis.append(e)
        self.K = sum(len(i) for i in self.coupled)
        basis_t = torch.stack(basis) if basis else torch.zeros(0, c, ptiles * th, ptiles * tw, dtype=torch.float64)

        # --- where each kernel entry lands in D (tile matrix) and B (boundary coupling) ------
        # Every entry of D or B is either 0 or exactly one kernel tap; pushing basis vectors
        # through the conv with a kernel holding its own (flat index + 1) gives the index map.
        codes = torch.arange(1, c * c * q * q + 1, dtype=torch.float64).reshape(c, c, q, q) * struct
        n = self.N
        eye = torch.eye(n, dtype=torch.float64).reshape(n, c, th, tw)
        dcode = _ar_conv(eye, codes, direction).reshape(n, n).t().round().long()  # D[m, n] = flat[dcode[m, n]]
        ch = torch.arange(c).view(c, 1, 1)
        rr = torch.arange(th).view(1, th, 1)
        ss = torch.arange(tw).view(1, 1, tw)
        if direction == "br":  # reads pixels down/right and channels ch' ≤ ch
            key = ((rr * tw + ss) * c + (c - 1 - ch)).reshape(-1)
        else:  # reads pixels up/left and channels ch' ≥ ch
            key = (((th - 1 - rr) * tw + (tw - 1 - ss)) * c + ch).reshape(-1)
        perm = torch.argsort(key)
        self.dcode_perm = dcode[perm][:, perm]  # upper triangular in this order
        assert int(torch.tril(self.dcode_perm, -1).abs().sum()) == 0, "tile matrix is not triangular"
        self.inv_perm = torch.argsort(perm)
        if self.K:
            out = _ar_conv(basis_t, codes, direction)[:, :, m * th : (m + 1) * th, m * tw : (m + 1) * tw]
            self.bcode = out.reshape(self.K, n).t().round().long()  # B[m, κ] = flat[bcode[m, κ]]
        else:
            self.bcode = torch.zeros(n, 0, dtype=torch.long)

        # --- the schedule: tiles in level order; per level the slice of its tiles and the
        # boundary gather from the outputs of the (few) earlier levels it depends on -------
        order = [(i, j) for lv in range(self.n_levels) for i in range(ni) for j in range(nj) if lev[i, j] == lv]
        pos = {t: n for n, t in enumerate(order)}  # position in level order
        self.level_slices: list[tuple[int, int]] = []
        self.level_sources: list[list[int]] = []  # earlier levels read by each level
        self.level_gather: list[torch.Tensor | None] = []
        start = 0
        for lv in range(self.n_levels):
            tiles = [t for t in order if lev[t] == lv]
            self.level_slices.append((start, start + len(tiles)))
            start += len(tiles)
            deps = []  # (tile or None, unknown n) per gathered value
            for i, j in tiles:
                for (a, b), coupled in zip(self.tile_offsets, self.coupled):
                    ii, jj = i + a, j + b
                    inside = 0 <= ii < ni and 0 <= jj < nj
                    if inside:
                        assert lev[ii, jj] < lv, "dependency on a tile that is not solved yet"
                    deps.extend(((ii, jj) if inside else None, n) for n in coupled)
            srcs = sorted({int(lev[t]) for t, _ in deps if t is not None})
            self.level_sources.append(srcs)
            if not srcs:
                self.level_gather.append(None)
                continue
            # column of (tile, n) in cat([zero, out[srcs[0]], out[srcs[1]], ...])
            base, col0 = {}, 1
            for sl in srcs:
                base[sl] = col0
                col0 += sum(1 for t in order if lev[t] == sl) * self.N
            first = {sl: next(k for k, t in enumerate(order) if lev[t] == sl) for sl in srcs}
            g = [0 if t is None else base[int(lev[t])] + (pos[t] - first[int(lev[t])]) * self.N + n for t, n in deps]
            self.level_gather.append(torch.tensor(g, dtype=torch.long))
        # --- gathers replacing padding, tiling and untiling (one index_select each way) ----
        # unknown (tile t, n = (ch, r, s)) <- pixel (ch, I·th + r − ph, J·tw + s − pw) of y
        off_h, off_w = (0, 0) if direction == "br" else (ph, pw)
        tI = torch.arange(ni).view(ni, 1, 1, 1, 1)
        tJ = torch.arange(nj).view(1, nj, 1, 1, 1)
        cc = torch.arange(c).view(1, 1, c, 1, 1)
        pr = torch.arange(th).view(1, 1, 1, th, 1)
        ps = torch.arange(tw).view(1, 1, 1, 1, tw)
        ii = tI * th + pr - off_h
        jj = tJ * tw + ps - off_w
        valid = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
        flat_pix = cc * (h * w) + ii.clamp(0, h - 1) * w + jj.clamp(0, w - 1)
        self.padded = bool((~valid).any())
        tile_gather = torch.where(valid, flat_pix, torch.full_like(flat_pix, c * h * w)).reshape(ni * nj, -1)
        level_order = torch.tensor([i * nj + j for i, j in order], dtype=torch.long)
        self.tile_gather = tile_gather[level_order].reshape(-1)  # tiles in level order
        # pixel (ch, i, j) of x <- history column 1 + pos(tile)·N + n
        pi = torch.arange(h).view(1, h, 1) + off_h
        pj = torch.arange(w).view(1, 1, w) + off_w
        tile_pos = torch.tensor([[pos[(i, j)] for j in range(nj)] for i in range(ni)], dtype=torch.long)
        n_in_tile = torch.arange(c).view(c, 1, 1) * (th * tw) + (pi % th) * tw + (pj % tw)
        self.out_gather = (1 + tile_pos[pi // th, pj // tw] * self.N + n_in_tile).reshape(-1)

    def steps(self) -> int:
        return self.n_levels

    def operators(self, kernel: Tensor, idx: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """(D⁻¹ (N, N), G = D⁻¹B (N, K)) for ``kernel`` (C, C, q, q), computed in float64.

        D and B are gathered from the kernel by the static index maps; D⁻¹ is one float64
        triangular solve in the dependency order (exact up to rounding for any non-zero diagonal).
        """
        k64 = kernel.to(torch.float64)
        dev = k64.device
        if idx is None:
            idx = {k: v.to(dev) for k, v in self.buffers().items() if k in ("dcode_perm", "inv_perm", "bcode")}
        flat = torch.cat([k64.new_zeros(1), k64.reshape(-1)])
        dp = flat[idx["dcode_perm"]]
        eye = torch.eye(self.N, dtype=torch.float64, device=dev)
        inv_p = torch.linalg.solve_triangular(dp, eye, upper=True)
        ip = idx["inv_perm"]
        dinv = inv_p.index_select(0, ip).index_select(1, ip)
        if self.K == 0:
            return dinv, k64.new_zeros(self.N, 0)
        return dinv, dinv @ flat[idx["bcode"]]

    def buffers(self) -> dict[str, Tensor]:
        """The index tensors of the schedule (to be registered as non-persistent buffers)."""
        out = {
            "tile_gather": self.tile_gather,
            "out_gather": self.out_gather,
            "dcode_perm": self.dcode_perm,
            "inv_perm": self.inv_perm,
            "bcode": self.bcode,
        }
        for lv in range(self.n_levels):
            if self.level_gather[lv] is not None:
                out[f"gather{lv}"] = self.level_gather[lv]
        return out

    def solve(self, y: Tensor, dinv: Tensor, g: Tensor, idx: dict[str, Tensor]) -> Tensor:
        """x with ``_ar_conv(x, kernel) = y``, from the :meth:`operators` D⁻¹ (N, N) and
        G = D⁻¹B (N, K) in y's dtype and the :meth:`buffers` on y's device.

        One gather cuts y into tiles in level order (B, T, N) (zero-padding ragged tiles), the
        levels are solved by :meth:`solve_tiles`, one last gather puts the pixels back.
        """
        C, H, W = self.C, self.H, self.W
        yf = y.reshape(-1, C * H * W)
        if self.padded:
            yf = torch.cat([yf, torch.zeros_like(yf[:, :1])], 1)
        tiles = yf.index_select(1, idx["tile_gather"]).reshape(-1, self.ni * self.nj, self.N)
        return self.solve_tiles(tiles, dinv, g, idx).index_select(1, idx["out_gather"]).reshape(-1, C, H, W)

    def solve_tiles(self, tiles: Tensor, dinv: Tensor, g: Tensor, idx: dict[str, Tensor]) -> Tensor:
        """Tiles of y in level order (B, T, N) -> [0, x in level order] (B, 1 + T·N).

        Z = D⁻¹·tiles for all tiles at once (one matmul); then per level: the level's tiles are a
        slice of Z, their neighbours' boundary unknowns are gathered from the outputs of the
        earlier levels they read, and G times them is subtracted (one matmul).
        """
        z = torch.matmul(tiles, dinv.t())
        zero = torch.zeros_like(z[:, 0, :1])  # (B, 1): the value outside the image
        if self.n_levels == 1:
            return torch.cat([zero, z.flatten(1)], 1)
        g_t = g.t()
        outs: list[Tensor] = []
        for lv in range(self.n_levels):
            a, b = self.level_slices[lv]
            x = z[:, a:b]  # (B, n_l, N)
            gather = idx.get(f"gather{lv}")
            if gather is not None:
                src = torch.cat([zero] + [outs[s] for s in self.level_sources[lv]], 1)
                bnd = src.index_select(1, gather).reshape(-1, b - a, self.K)  # (B, n_l, K)
                x = x - torch.matmul(bnd, g_t)
            outs.append(x.flatten(1))
        return torch.cat([zero] + outs, 1)

    def solve_tiles_rows(self, tiles: Tensor, dinv: Tensor, g: Tensor, idx: dict[str, Tensor]) -> Tensor:
        """:meth:`solve_tiles` with the batch last: tiles (T, N, B) -> (1 + T·N, B).

        Same arithmetic; every gather selects whole rows. Used for ONNX export, where
        onnxruntime's Gather on a non-leading axis is ~10× slower than on axis 0 (in eager
        PyTorch the batch-first layout is faster: it needs no transposes)."""
        z = torch.matmul(dinv, tiles)  # (T, N, B)
        zero = torch.zeros_like(z[0, :1])  # (1, B)
        if self.n_levels == 1:
            return torch.cat([zero, z.reshape(self.ni * self.nj * self.N, -1)], 0)
        outs: list[Tensor] = []
        for lv in range(self.n_levels):
            a, b = self.level_slices[lv]
            x = z[a:b]  # (n_l, N, B)
            gather = idx.get(f"gather{lv}")
            if gather is not None:
                src = torch.cat([zero] + [outs[s] for s in self.level_sources[lv]], 0)
                bnd = src.index_select(0, gather).reshape(b - a, self.K, -1)  # (n_l, K, B)
                x = x - torch.matmul(g, bnd)
            outs.append(x.reshape((b - a) * self.N, -1))
        return torch.cat([zero] + outs, 0)


def _exporting() -> bool:
    """True while torch.onnx.export / torch.jit.trace / torch.export trace the module."""
    return bool(torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_exporting())


def _link(first: ARQuadrantSolver, second: ARQuadrantSolver) -> Tensor:
    """Index from ``first``'s solved history (B, 1 + T·N) straight to ``second``'s input tiles
    (one gather instead of untiling and tiling again; padded positions read column 0 = 0)."""
    pix = second.tile_gather
    outside = pix >= first.C * first.H * first.W
    src = first.out_gather[pix.clamp_max(first.C * first.H * first.W - 1)]
    return torch.where(outside, torch.zeros_like(src), src)


def _emerging_inverse(
    y: Tensor, tl: "_Schedule", br: "_Schedule", link: Tensor, d2: Tensor, g2: Tensor, d1: Tensor, g1: Tensor
) -> Tensor:
    """Solve conv 2 (top-left) then conv 1 (bottom-right): 3 gathers, 2 level schedules."""
    s2, s1 = tl.solver, br.solver
    i2, i1 = tl.index(), br.index()
    if _exporting():  # batch-last: row gathers (fast Gather in onnxruntime)
        yr = y.reshape(-1, s2.C * s2.H * s2.W).t()
        if s2.padded:
            yr = torch.cat([yr, torch.zeros_like(yr[:1])], 0)
        h2 = s2.solve_tiles_rows(yr.index_select(0, i2["tile_gather"]).reshape(s2.ni * s2.nj, s2.N, -1), d2, g2, i2)
        h1 = s1.solve_tiles_rows(h2.index_select(0, link).reshape(s1.ni * s1.nj, s1.N, -1), d1, g1, i1)
        return h1.index_select(0, i1["out_gather"]).t().reshape(-1, s1.C, s1.H, s1.W)
    yf = y.reshape(-1, s2.C * s2.H * s2.W)
    if s2.padded:
        yf = torch.cat([yf, torch.zeros_like(yf[:, :1])], 1)
    h2 = s2.solve_tiles(yf.index_select(1, i2["tile_gather"]).reshape(-1, s2.ni * s2.nj, s2.N), d2, g2, i2)
    h1 = s1.solve_tiles(h2.index_select(1, link).reshape(-1, s1.ni * s1.nj, s1.N), d1, g1, i1)
    return h1.index_select(1, i1["out_gather"]).reshape(-1, s1.C, s1.H, s1.W)


# --------------------------------------------------------------------------- module buffers
class _Schedule(nn.Module):
    """Holds an :class:`ARQuadrantSolver`'s index tensors as non-persistent buffers (device moves)."""

    def __init__(self, solver: ARQuadrantSolver) -> None:
        super().__init__()
        self.solver = solver
        self.names = list(solver.buffers())
        for name, t in solver.buffers().items():
            self.register_buffer(name, t, persistent=False)

    def index(self) -> dict[str, Tensor]:
        return {n: getattr(self, n) for n in self.names}

    def solve(self, y: Tensor, dinv: Tensor, g: Tensor) -> Tensor:
        return self.solver.solve(y, dinv, g, self.index())

    def operators(self, kernel: Tensor) -> tuple[Tensor, Tensor]:
        return self.solver.operators(kernel, self.index())
