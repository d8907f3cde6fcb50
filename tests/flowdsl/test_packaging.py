"""Packaging: one namespace, every package listed, grammar and specs shipped as package data."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = set()
    for pkg, folder in cfg["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "__pycache__" in rel.parts:
                continue
            found.add(".".join([pkg, *rel.parts]) if rel.parts else pkg)
    assert found == listed


def test_no_generic_top_level_imports():
    for name in ("compiler", "runtime", "grammar", "specs"):
        assert importlib.util.find_spec(name) is None, f"'{name}' must only be importable under flowdsl"


def test_subpackages_import_and_grammar_and_specs_are_package_data():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pkg in cfg["packages"]:
        importlib.import_module(pkg)
    from importlib import resources

    from flowdsl.grammar import grammar_text

    assert "flow_def" in grammar_text()
    assert any(str(p).endswith(".flow") for p in resources.files("flowdsl.specs").iterdir())


def test_console_entry_point_and_module():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "flowdsl", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "check" in out.stdout
