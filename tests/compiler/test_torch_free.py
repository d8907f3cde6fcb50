"""Parsing and checking never import torch: ``flowdsl.parse`` on every bundled spec, and the
``flowdsl check`` command, in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.flow"))
HEAVY = ("torch", "onnx", "onnxruntime", "numpy", "matplotlib", "flowdsl.runtime")

PROBE = """
import json, sys
import flowdsl
for path in sys.argv[1:]:
    flowdsl.load(path)
print(json.dumps(sorted(m for m in sys.modules
                        if m.split('.')[0] in {'torch', 'onnx', 'onnxruntime', 'numpy', 'matplotlib'}
                        or m.startswith('flowdsl.runtime'))))
"""


def test_parse_of_every_spec_never_imports_torch():
    assert len(SPECS) >= 10
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, SPECS)], capture_output=True, text=True, check=True, cwd="/"
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"parsing imported {loaded}"


def test_check_command_never_imports_torch():
    code = (
        "import sys, runpy\n"
        "sys.argv = ['flowdsl', 'check', sys.argv[1]]\n"
        "from flowdsl.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'onnx', 'numpy'} "
        "or m.startswith('flowdsl.runtime'))\n"
        "print('IMPORTED', bad)\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "specs" / "glow_digits.flow")], capture_output=True, text=True, cwd="/"
    )
    assert out.returncode == 0, out.stderr
    assert "IMPORTED []" in out.stdout, out.stdout[-500:]
