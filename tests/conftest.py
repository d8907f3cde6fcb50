"""Test configuration: always exercise the *installed* flowdsl, seeded and on few threads."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The checkout root must not shadow the installed package (its compiler/, runtime/ and grammar/
# folders are only importable as flowdsl.compiler, flowdsl.runtime, flowdsl.grammar).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]

# The shared test helpers (flowtest.py) are imported by name without putting tests/ on sys.path:
# tests/flowdsl/, tests/compiler/ and tests/runtime/ mirror the source tree and must not shadow it.
_spec = importlib.util.spec_from_file_location("flowtest", Path(__file__).resolve().parent / "flowtest.py")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI runs a fixed, reproducible set of examples; FLOWDSL_HYPOTHESIS=explore draws new ones.
settings.register_profile("default", derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile("explore", deadline=None, database=None, print_blob=True)
settings.load_profile(os.environ.get("FLOWDSL_HYPOTHESIS", "default"))

torch.set_num_threads(1)  # on 2 shared cores, one intra-op thread is both faster and steadier

SPECS = ROOT / "specs"

flowtest = importlib.util.module_from_spec(_spec)
sys.modules["flowtest"] = flowtest
_spec.loader.exec_module(flowtest)

# tests/kindspecs.py (tiny snippets for every registered layer kind), imported by name the same way
_kspec = importlib.util.spec_from_file_location("kindspecs", Path(__file__).resolve().parent / "kindspecs.py")
kindspecs = importlib.util.module_from_spec(_kspec)
sys.modules["kindspecs"] = kindspecs
_kspec.loader.exec_module(kindspecs)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    os.environ.setdefault("FLOWDSL_TESTING", "1")
