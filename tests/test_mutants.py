"""The mutation check (scripts/mutants.py): known small bugs, each applied to a copy of the tree,
must be caught by the default test run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "mutants.py"


def _script():
    spec = importlib.util.spec_from_file_location("flowdsl_mutants_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def test_every_mutant_still_applies_to_the_tree():
    """Fast: each replacement's old text is found exactly once (in its file, or in the one file it
    moved to), and each mutant names test files that exist, so a stale mutant fails here by name."""
    m = _script()
    files = m.tracked_files(ROOT)
    assert len(m.MUTANTS) >= 10 and len({x.name for x in m.MUTANTS}) == len(m.MUTANTS)
    for mutant in m.MUTANTS:
        for edit in mutant.edits:
            assert edit.old != edit.new, mutant.name
            m.locate(mutant, edit, ROOT, files)  # raises MutationError with the details
        for t in mutant.tests:
            assert (ROOT / t.split("::")[0]).is_file(), (mutant.name, t)


@pytest.mark.slow
def test_every_known_mutant_is_caught():
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-4000:]
