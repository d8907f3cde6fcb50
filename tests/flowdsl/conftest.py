"""Registers tests/flowdsl/langtest.py by name (``import langtest``), as tests/conftest.py does for
flowtest: tests/flowdsl/ itself stays off sys.path (it mirrors the ``flowdsl`` package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if "langtest" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("langtest", Path(__file__).resolve().parent / "langtest.py")
    langtest = importlib.util.module_from_spec(_spec)
    sys.modules["langtest"] = langtest
    _spec.loader.exec_module(langtest)
