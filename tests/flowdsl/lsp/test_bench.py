"""The latency benchmark's parts (the benchmark itself is run by hand: BENCHMARKS.md)."""

from __future__ import annotations

import flowdsl
from flowdsl.cli import CORE_COMMANDS, build_parser
from flowdsl.lsp.bench import generate_spec, table


def test_generated_spec_has_the_asked_number_of_layers_and_checks():
    spec = flowdsl.parse(generate_spec(31))
    assert len(spec.layers) == 31
    assert [layer.kind for layer in spec.layers[:4]] == ["actnorm", "conv1x1", "coupling", "actnorm"]


def test_table_reports_median_p90_max_and_cpu():
    res = {
        "starts": [0.5, 0.7, 0.6],
        "starts_cpu": [0.4, None, 0.5],
        "changes": [0.1] * 9 + [0.3],
        "changes_cpu": [0.05] * 10,
        "pipeline": [0.08],
        "layers": 1000,
    }
    rows = table(res).splitlines()
    assert rows[2].startswith("| server start") and "| 3 | 600 ms | 700 ms | 700 ms | 450 ms |" in rows[2]
    assert "| 10 | 100 ms | 100 ms | 300 ms | 50 ms | ≤ 200 ms |" in rows[3]
    assert "| 1 | 80 ms | 80 ms | 80 ms | — |" in rows[4]


def test_lsp_is_a_core_command():
    assert "lsp" in CORE_COMMANDS
    args = build_parser(plugins=False).parse_args(["lsp", "--stdio"])
    assert args.func.__name__ == "_cmd_lsp"
