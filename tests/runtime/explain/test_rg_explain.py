"""RG-Flow explained: inpainting (touched latents grow as O(log L)), receptive fields in the causal
cones, scale and temperature mixing, the inpainting benchmark and the ``flowdsl explain`` CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import flowdsl
from flowdsl.runtime.bench.rg import inpaint_benchmark
from flowdsl.runtime.explain.inpaint import inpaint, touched_latents
from flowdsl.runtime.explain.latents import randomise_parameters, sample_latents, scale_mix, temperature_mix
from flowdsl.runtime.explain.receptive import receptive_fields
from flowdsl.runtime.layers._rg_lattice import auto_levels, dependency_mask, latent_levels, make_plan

SPECS = Path(__file__).resolve().parents[3] / "specs"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the machines are shared; oversubscribed threads are 30× slower
    yield
    torch.set_num_threads(n)


def _digits_model(std=0.05, seed=0):
    m = flowdsl.compile(flowdsl.load(SPECS / "rgflow_digits.flow"), seed=seed)
    return randomise_parameters(m, std, seed).eval()


# --------------------------------------------------------------------------------------------
# inpainting: touched latents grow as O(log L) for a fixed hole
def test_inpainting_touches_O_log_L_latents():
    K, hole = 4, 2
    rows = []
    for L in (8, 16, 32, 64, 128):
        H = auto_levels(L, K)
        mask = torch.zeros(L, L, dtype=torch.bool)
        c = L // 2 - hole // 2
        mask[c : c + hole, c : c + hole] = True
        touched = dependency_mask(make_plan(1, L, K, H), mask)[0]
        lv = latent_levels(L, H)
        per_level = [int((touched & (lv == h)).sum()) for h in range(H)]
        rows.append((L, H, sum(per_level), per_level))
    # bounded per level, so the total grows linearly in the number of levels = log2(L/K) + 1
    assert max(max(r[3]) for r in rows) <= 3 * (2 * K) ** 2
    steps = [b[2] - a[2] for a, b in zip(rows, rows[1:])]
    assert max(steps) - min(steps) <= 2 * K * K  # constant increments per doubling of L
    assert rows[-1][2] < 0.02 * 128 * 128
    print("\n" + "\n".join(f"L={L:4d} levels={H} touched={t:4d} per level {p}" for L, H, t, p in rows))


# --------------------------------------------------------------------------------------------
# the explain tools and CLI
def test_scale_and_temperature_mixing():
    m = _digits_model()
    g = torch.Generator().manual_seed(0)
    xa, xb = torch.rand(1, 1, 8, 8, generator=g), torch.rand(1, 1, 8, 8, generator=g)
    assert torch.allclose(scale_mix(m, xa, xb, 0), xa, atol=1e-5)  # every level from A
    assert torch.allclose(scale_mix(m, xa, xb, 3), xb, atol=1e-5)  # every level from B
    mid = scale_mix(m, xa, xb, 1)
    za, _ = m(xa)
    zb, _ = m(xb)
    zm, _ = m(mid)
    lv = m.latent_scales()
    assert torch.allclose(zm[0][lv >= 1], za[0][lv >= 1], atol=1e-4)
    assert torch.allclose(zm[0][lv < 1], zb[0][lv < 1], atol=1e-4)
    hi = temperature_mix(m, 2, lam=0, t_high=0.8, t_low=0.2, seed=3)
    lo = temperature_mix(m, 2, lam=3, t_high=0.8, t_low=0.2, seed=3)
    mix = temperature_mix(m, 2, lam=1, t_high=0.8, t_low=0.2, seed=3)
    z_hi, z_lo, z_mix = m(hi)[0], m(lo)[0], m(mix)[0]
    assert torch.allclose(z_mix[:, lv >= 1], z_hi[:, lv >= 1], atol=1e-4)
    assert torch.allclose(z_mix[:, lv < 1], z_lo[:, lv < 1], atol=1e-4)
    assert torch.allclose(z_hi, 4 * z_lo, atol=1e-4)  # the same draws, scaled by T


def test_receptive_fields_live_in_the_causal_cones():
    m = _digits_model(0.1)
    rf = receptive_fields(m, n_samples=4)
    assert rf.maps.shape == (3, 8, 8) and rf.cones is not None
    lv = m.latent_scales()[0]
    for h, (y, x) in enumerate(rf.positions):
        assert lv[y, x] == h
        assert float(rf.maps[h][~rf.cones[h]].abs().sum()) == 0.0
        assert float(rf.maps[h][y, x]) > 0
    sup = rf.support()
    assert sup[0] <= 16 < sup[2]  # level 0: inside a 2K×2K = 4×4 cone; the top spans the image
    assert rf.extent() == sorted(rf.extent())


def test_inpainting_changes_only_the_touched_latents():
    m = _digits_model(0.1)
    with torch.no_grad():
        truth = m.inverse(sample_latents(m, 1, 0.7, seed=1))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[3:5, 3:5] = True
    touched = touched_latents(m, mask)
    assert int(touched.sum()) == 28  # 12 + 12 + 4 (fine → coarse)
    probe = touched_latents(_ProbeOnly(m), mask)  # the generic (Jacobian-probe) path agrees
    assert torch.equal(probe, touched)
    res = inpaint(m, truth[0], mask, steps=40, lr=0.05, region="cone")
    z_start, _ = m(torch.where(mask, torch.full_like(truth, float(truth[0][:, ~mask].mean())), truth))
    assert res.n_free == 28
    assert torch.equal(res.z[0][~touched], z_start[0][~touched].detach())  # the rest stay fixed
    assert torch.equal(res.x[0][:, ~mask], truth[0][:, ~mask])  # known pixels are kept
    assert res.losses[-1] < res.losses[0]
    lang = inpaint(m, truth[0], mask, steps=5, lr=0.05, region="cone", method="langevin")
    assert torch.equal(lang.z[0][~touched], z_start[0][~touched].detach())
    assert not any(p.grad is not None for p in m.parameters())


class _ProbeOnly(nn.Module):
    """The model seen through its API only (no ``steps``), to force the probe path."""

    def __init__(self, m):
        super().__init__()
        self.m = m
        self.prior = m.prior

    def latent_scales(self):
        return self.m.latent_scales()

    def inverse(self, z):
        return self.m.inverse(z)


def test_inpaint_benchmark_table():
    table, rows = inpaint_benchmark(sizes=(8, 16, 32), hole=4, steps=2)
    assert table.count("\n| ") == 3 and "touched latents (cone)" in table and "ratio full / cone" in table
    touched = [r["cone"]["n_free"] for r in rows]
    assert [r["all"]["n_free"] for r in rows] == [64, 256, 1024]
    assert touched[2] - touched[1] == touched[1] - touched[0]  # constant per extra level: O(log L)
    cone = [r["cone"]["patches"] for r in rows]
    assert [r["all"]["patches"] for r in rows] == [10, 42, 170]  # Σ_h 2·(L/(4·2^h))²
    assert cone[2] - cone[1] == cone[1] - cone[0] and cone[2] < 170 // 2  # O(log L) patches per step
    assert all(r["cone"]["incremental"] and not r["all"]["incremental"] for r in rows)
    assert all(r["max_diff"] < 1e-4 and r["ratio"] > 0 for r in rows)
    print("\n" + table)


def _is_png(path) -> bool:
    data = open(path, "rb").read()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_explain_cli_writes_pictures(tmp_path, capsys):
    from flowdsl.cli import main

    spec = str(SPECS / "rgflow_digits.flow")
    assert main(["explain", spec, "--receptive-fields", "--samples", "4", "-o", str(tmp_path / "rf.png")]) == 0
    assert main(["explain", spec, "--mix", "--pairs", "2", "-o", str(tmp_path / "mix.png")]) == 0
    assert main(["explain", spec, "--inpaint", "--steps", "5", "-o", str(tmp_path / "inpaint.png")]) == 0
    out = capsys.readouterr().out
    assert "touched latents per level (fine→coarse): [12, 12, 4]" in out
    for name in ("rf.png", "mix.png", "inpaint.png"):
        assert _is_png(tmp_path / name), name
    assert main(["explain", spec]) == 1  # no mode: a user error, not a traceback


def test_explain_reads_a_training_run(tmp_path, capsys):
    from flowdsl.cli import main

    run = tmp_path / "run"
    spec = str(SPECS / "rgflow_digits.flow")
    assert (
        main(
            [
                "train",
                spec,
                "--steps",
                "3",
                "--out",
                str(run),
                "--quiet",
                "--threads",
                "1",
                "--eval-every",
                "3",
                "--checkpoint-every",
                "3",
            ]
        )
        == 0
    )
    assert main(["explain", str(run), "--receptive-fields", "--samples", "2", "-o", str(tmp_path / "rf.png")]) == 0
    assert "randomised" not in capsys.readouterr().out  # trained weights are used as they are
    assert _is_png(tmp_path / "rf.png")
