"""The conditional-flow test helpers (ctxtest.py), importable by name like flowtest."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("ctxtest", Path(__file__).resolve().parent / "ctxtest.py")
ctxtest = importlib.util.module_from_spec(_spec)
sys.modules["ctxtest"] = ctxtest
_spec.loader.exec_module(ctxtest)
