"""The peers benchmark (``flowdsl bench --sections peers``): the same architectures in flowdsl, zuko
and nflows, and a 2-step smoke run of the whole section. The measurements themselves live in
BENCHMARKS.md, never in tests."""

from __future__ import annotations

import pytest
import torch

import flowdsl.runtime.bench.suite as suite
from flowdsl.cli import main as flowdsl_main
from flowdsl.runtime.bench.peers import Arch, _kept, build_peer, param_counts
from flowdsl.runtime.bench.peers_report import QUALITY_MARGIN, peers_section, quality_tables, speed_tables
from flowdsl.runtime.bench.peers_runs import RunResult, SpeedResult
from flowdsl.runtime.bench.peers_start import SAME_START, build_run_peer, copy_zuko_start

pytest.importorskip("zuko")
pytest.importorskip("nflows")

TINY = Arch(hidden=8, depth=2, layers=2, bins=4, bound=3.0)


@pytest.mark.parametrize("dim", [2, 5, 13])
def test_nsf_coupling_has_the_same_parameters_in_all_three(dim):
    counts = {lib: param_counts(build_peer(lib, "nsf", dim, Arch()).module) for lib in ("flowdsl", "zuko", "nflows")}
    # kept half ⌊D/2⌋ → 64 → 64 → (D − ⌊D/2⌋)·(3·8 − 1), per layer, 4 layers
    c1 = dim // 2
    per_layer = (c1 * 64 + 64) + (64 * 64 + 64) + (64 * (dim - c1) * 23 + (dim - c1) * 23)
    assert counts["flowdsl"] == counts["zuko"] == counts["nflows"] == (4 * per_layer, 4 * per_layer)


@pytest.mark.parametrize("family", ["maf", "maf_spline"])
def test_maf_stores_the_same_weights_in_all_three_and_counts_only_unmasked_ones(family):
    counts = [param_counts(build_peer(lib, family, 13, TINY).module) for lib in ("flowdsl", "zuko", "nflows")]
    per = 2 if family == "maf" else 3 * TINY.bins - 1
    dense = TINY.layers * ((13 * 8 + 8) + (8 * 8 + 8) + (8 * 13 * per + 13 * per))
    assert [c[0] for c in counts] == [dense] * 3
    for stored, effective in counts:  # the masks take out about half of a MADE's weights
        assert 0.3 * stored < effective < stored


def test_the_maf_peers_are_autoregressive_in_the_same_orders():
    """Layer 1: entry i depends on entries before it in the natural order (flowdsl, zuko, nflows all
    start natural); the Jacobian dz/dx of one layer is lower triangular with a positive diagonal."""
    arch = Arch(hidden=16, depth=2, layers=1, bins=4, bound=3.0)
    x = torch.randn(6, dtype=torch.float64)
    for lib in ("flowdsl", "zuko", "nflows"):
        mod = build_peer(lib, "maf", 6, arch).module.double()
        for p in mod.parameters():
            torch.nn.init.normal_(p, std=0.3)
        if lib == "flowdsl":
            fn = lambda v: mod(v[None])[0][0]  # noqa: E731
        elif lib == "zuko":
            fn = lambda v: mod().transform(v[None])[0]  # noqa: E731
        else:
            fn = lambda v: mod._transform(v[None])[0][0]  # noqa: E731
        jac = torch.autograd.functional.jacobian(fn, x)
        assert torch.equal(jac.triu(1), torch.zeros_like(jac)), lib
        assert (jac.diagonal() > 0).all() and (jac.tril(-1) != 0).any(), lib


@pytest.mark.parametrize("dim", [2, 5])
def test_the_peers_couplings_keep_the_entries_flowdsl_keeps(dim):
    """One layer: flowdsl keeps x[:⌊D/2⌋] (then reverses); zuko's and nflows' first coupling must keep
    the same coordinates, and change the others."""
    arch = Arch(hidden=8, depth=1, layers=1, bins=4, bound=3.0)
    x = torch.randn(7, dim, dtype=torch.float64)
    kept = _kept(dim, 0)
    ours = build_peer("flowdsl", "nsf", dim, arch).module.double()
    for p in ours.parameters():  # off the identity start
        torch.nn.init.normal_(p, std=0.3)
    z_ours = ours(x)[0].flip(-1)  # undo the final reverse
    zk = build_peer("zuko", "nsf", dim, arch).module.double()
    z_zuko = zk().transform(x)
    nf = build_peer("nflows", "nsf", dim, arch).module.double()
    z_nflows = nf._transform(x)[0]
    for z in (z_ours, z_zuko, z_nflows):
        assert torch.equal(z[:, kept], x[:, kept])
        assert (z[:, ~kept] - x[:, ~kept]).abs().min() > 0
    assert not torch.equal(_kept(dim, 1), kept)


def _run(lib, fam, data, nll, seed=0):
    return RunResult(lib, fam, data, (10, 10), nll, nll, 100, 1.0, seed=seed)


def test_quality_verdicts_apply_the_margin():
    results = [
        _run("flowdsl", "nsf", "wine", 1.0 + QUALITY_MARGIN + 0.01),
        _run("zuko", "nsf", "wine", 1.0),
        _run("flowdsl", "nsf", "pinwheel", 1.0 + QUALITY_MARGIN - 0.01),
        _run("zuko", "nsf", "pinwheel", 1.0),
        _run("flowdsl", "affine", "pinwheel", 0.9),
    ]
    text = quality_tables(results, ["wine", "pinwheel"], {"wine": None, "pinwheel": 0.5}, 10, 256, 1e-3)
    verdicts = text.split("### Quality acceptance")[1].split("###")[0]
    rows = {line.split("|")[1].strip(): line for line in verdicts.splitlines() if line.startswith("| ")}
    assert "+0.030 **NO**" in rows["wine"] and "+0.010 yes" in rows["pinwheel"]
    assert "+0.110 **NO**" in rows["pinwheel"]  # the spline coupling lost to the affine one


def test_quality_verdicts_compare_means_over_seeds():
    """One seed behind by more than the margin, the mean within it: the verdict follows the mean,
    and the cells show the seeds' range and the per-seed differences."""
    results = [
        _run("flowdsl", "nsf", "wine", 1.05, seed=0),
        _run("zuko", "nsf", "wine", 1.00, seed=0),
        _run("flowdsl", "nsf", "wine", 0.97, seed=1),
        _run("zuko", "nsf", "wine", 1.01, seed=1),
    ]
    text = quality_tables(results, ["wine"], {"wine": None}, 10, 256, 1e-3)
    nll_row = next(line for line in text.splitlines() if line.startswith("| wine (13)"))
    assert "1.010 (0.970–1.050)" in nll_row and "**1.005** (1.000–1.010)" in nll_row
    verdicts = text.split("### Quality acceptance")[1].split("###")[0]
    row = next(line for line in verdicts.splitlines() if line.startswith("| wine"))
    assert "+0.005 yes [-0.040, +0.050]" in row
    assert "2 seeds (0, 1" in text


def test_speed_verdicts_use_the_per_round_ratio():
    times = {
        "log_prob": {"flowdsl fused + compile": [1.0, 1.0, 1.0], "zuko": [1.6, 1.4, 1.6]},
        "sample": {"flowdsl fused + compile": [1.0, 1.0, 1.0], "zuko": [1.2, 1.2, 1.2]},
    }
    text = speed_tables([SpeedResult("nsf", 8, 256, {"flowdsl": (1, 1)}, times)], 3, 2)
    lines = [line for line in text.splitlines() if line.startswith("| NSF") and "≥ 1.5×" in line]
    assert "1.60×" in lines[0] and lines[0].endswith("| yes |")
    assert "1.20×" in lines[1] and lines[1].endswith("| **NO** |")


def test_maf_sampling_verdict_reads_the_fused_module_when_sampling_is_not_compiled():
    times = {
        "log_prob": {"flowdsl fused + compile": [1.0, 1.0], "flowdsl fused": [3.0, 3.0], "zuko": [2.0, 2.0]},
        "sample": {"flowdsl fused": [5.0, 5.0], "zuko": [10.0, 10.0]},
    }
    text = speed_tables([SpeedResult("maf", 8, 256, {"flowdsl": (1, 1)}, times)], 2, 2)
    verdicts = text.split("### Speed acceptance")[1].split("###")[0]
    lp = next(line for line in verdicts.splitlines() if "| log_prob |" in line)
    sa = next(line for line in verdicts.splitlines() if "| sample |" in line)
    assert "| fused + compile |" in lp and "2.00×" in lp and lp.endswith("| yes |")
    assert "| fused |" in sa and "2.00×" in sa and sa.endswith("| yes |")


def test_two_step_smoke_run_of_the_section():
    say: list[str] = []
    text = peers_section(
        steps=2,
        datasets=["8gaussians"],
        dims=[3],
        arch=TINY,
        repeats=1,
        threads=1,
        compile_=False,
        toy_n=600,
        say=say.append,
        seeds=(0, 1),
        same_start=True,
    )
    assert text.startswith("## Peers: zuko and nflows")
    same = text.split("### Same start")[1].split("###")[0]
    assert next(line for line in same.splitlines() if line.startswith("| 8gaussians")).count(" yes ") == 3
    row = next(line for line in text.splitlines() if line.startswith("| 8gaussians (2)"))
    assert row.count("|") >= 8 and "diverged" not in row
    speed = [line for line in text.splitlines() if line.startswith("| NSF coupling") and "| 3 |" in line]
    assert {"log_prob", "sample"} <= {line.split("|")[3].strip() for line in speed}


def test_bench_needs_a_spec_only_for_the_spec_sections(monkeypatch, capsys):
    assert flowdsl_main(["bench", "--sections", "fusion"]) == 1
    assert "need at least one SPEC" in capsys.readouterr().err
    seen = {}
    monkeypatch.setattr(suite, "peers_part", lambda args, say: seen.setdefault("args", args) and "## Peers\n")
    assert flowdsl_main(["bench", "--sections", "peers", "--peers-steps", "0", "--peers-data", "wine"]) == 0
    assert seen["args"].peers_steps == 0 and seen["args"].peers_data == ["wine"]
    with pytest.raises(SystemExit) as e:
        flowdsl_main(["bench", "--sections", "peers", "--peers-data", "mnist"])
    assert e.value.code == 1


def test_bench_peers_seeds_and_speed_only_or_quality_only(monkeypatch):
    seen: list = []
    monkeypatch.setattr(suite, "peers_part", lambda args, say: seen.append(args) or "## Peers\n")
    assert flowdsl_main(["bench", "--sections", "peers", "--peers-seeds", "3,4", "--peers-dims", ""]) == 0
    assert seen[-1].peers_seeds == [3, 4] and seen[-1].peers_dims == []
    assert flowdsl_main(["bench", "--sections", "peers"]) == 0
    assert seen[-1].peers_seeds == [0, 1, 2] and seen[-1].peers_dims == [64]
    assert not seen[-1].peers_same_start
    assert flowdsl_main(["bench", "--sections", "peers", "--peers-seeds", "0-3,9,2", "--peers-same-start"]) == 0
    assert seen[-1].peers_seeds == [0, 1, 2, 3, 9] and seen[-1].peers_same_start
    for bad in ("", "-1", "a", "4-2", "1-"):
        with pytest.raises(SystemExit) as e:
            flowdsl_main(["bench", "--sections", "peers", "--peers-seeds", bad])
        assert e.value.code == 1


def _randomised(peer, gen):
    with torch.no_grad():
        for p in peer.module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.7)
    return peer


@pytest.mark.parametrize("family", ["nsf", "maf", "maf_spline"])
def test_flowdsl_computes_zukos_density_and_inverse_with_zukos_weights(monkeypatch, family):
    """zuko as the reference: its model's weights (randomised) copied into flowdsl's model of the
    same family (``copy_zuko_start``; a MADE takes zuko's cyclic connectivity, its units permuted into
    flowdsl's sorted order) give the same log-density and the same inverse to float64 rounding,
    inside the bound, at ±bound and far out in the identity tails. flowdsl's minimum bin size (zuko
    has none) is set to 0 for the comparison. The inverse of a MAF is flowdsl's sequential plan, so
    this also checks the plan derived from the new degrees; the frozen (fused) form is checked too."""
    import flowdsl.runtime.layers._rq_spline as rq

    monkeypatch.setattr(rq, "MIN_BIN", 0.0)
    dim, arch = 5, Arch(hidden=8, depth=2, layers=2, bins=4, bound=3.0)
    gen = torch.Generator().manual_seed(0)
    zk = build_peer("zuko", family, dim, arch)
    zk.module.double()
    _randomised(zk, gen)
    ours = build_peer("flowdsl", family, dim, arch)
    ours.module.double()
    copy_zuko_start(ours, zk, arch)
    x = torch.randn(64, dim, generator=gen, dtype=torch.float64) * 2
    x[0] = torch.tensor([3.0, -3.0, 10.0, 0.0, -1e3], dtype=torch.float64)
    x[1] = torch.tensor([2.999, -2.999, 1e4, -1e4, 0.5], dtype=torch.float64)
    with torch.no_grad():
        flow = zk.module()
        torch.testing.assert_close(ours.log_prob(x), flow.log_prob(x), rtol=1e-10, atol=1e-10)
        # z and x: the generic rows. Rows 0 and 1 (±bound, ±1e4) drive the randomised conditioners to
        # degenerate splines (bins of width ~0 with the minimum at 0), where z is ill-conditioned.
        z = flow.transform(x[2:])
        torch.testing.assert_close(ours.module.forward(x[2:])[0], z, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(ours.module.inverse(z), flow.transform.inv(z), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(ours.module.fuse().log_prob(x), flow.log_prob(x), rtol=1e-10, atol=1e-10)


def test_same_start_runs_train_from_zukos_weights():
    """A same-start model computes zuko's density at the start (float32, minimum bin 0 not needed for
    the affine MAF), and its MADEs carry zuko's degree multiset."""
    from flowdsl.runtime.layers._made import MADE

    ss = build_run_peer(SAME_START, "maf", 7, TINY, seed=4)
    zk = build_peer("zuko", "maf", 7, TINY, seed=4)
    x = torch.randn(32, 7)
    with torch.no_grad():
        torch.testing.assert_close(ss.log_prob(x), zk.log_prob(x), rtol=1e-5, atol=1e-5)
    degs = [m.hid_deg for m in ss.module.modules() if isinstance(m, MADE)]
    assert degs and all(d == sorted([1 + j % 6 for j in range(8)]) for d in degs)
    assert ss.library == SAME_START
    with pytest.raises(ValueError, match="same family"):
        copy_zuko_start(build_peer("flowdsl", "nsf", 7, TINY), zk, TINY)
    with pytest.raises(ValueError, match="2 hidden layers"):
        deep = Arch(hidden=8, depth=3, layers=2)
        copy_zuko_start(build_peer("flowdsl", "maf", 7, deep), build_peer("zuko", "maf", 7, deep), deep)


def test_made_hidden_degrees_are_validated():
    from flowdsl.runtime.layers._made import MADE

    made = MADE(4, hidden=6, depth=2, per_entry=2, order="natural", seed=0)
    for bad in ([1, 2, 3, 3, 2, 1], [1, 1, 2, 2, 3, 4], [1, 2, 3]):  # unsorted, above D − 1, too few
        with pytest.raises(ValueError, match="hidden degrees"):
            made.set_hidden_degrees(bad)
    made.set_hidden_degrees([1, 1, 1, 2, 3, 3])
    assert [n for _, n in made.plan] == [0, 3, 4, 6]


def test_same_start_table_reports_the_gap_with_the_draw_taken_out():
    results = [
        _run("flowdsl", "maf", "wine", 1.10, seed=0),
        _run("zuko", "maf", "wine", 1.00, seed=0),
        _run(SAME_START, "maf", "wine", 1.003, seed=0),
        _run("flowdsl", "maf", "wine", 0.95, seed=1),
        _run("zuko", "maf", "wine", 1.02, seed=1),
        _run(SAME_START, "maf", "wine", 1.019, seed=1),
    ]
    text = quality_tables(results, ["wine"], {"wine": None}, 10, 256, 1e-3)
    same = text.split("### Same start")[1].split("###")[0]
    row = next(line for line in same.splitlines() if line.startswith("| wine"))
    assert "+0.001 yes [-0.001, +0.003] | 3.0e-03 |" in row
    assert "flowdsl (zuko" not in text.split("### Quality acceptance")[0]  # not a column of the main table
