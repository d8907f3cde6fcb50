"""Reusing finished training runs in the benchmarks (``bench-training --reuse``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["finished_run"]


def finished_run(run: Path, spec, steps: int) -> dict | None:
    """The summary of a run in ``run`` that trained ``spec`` (same text) for ``steps`` steps to
    the end, or None."""
    import json

    from flowdsl.runtime.training.models import spec_sha256

    try:
        s = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = s.get("spec_sha256") == spec_sha256(spec) and s.get("step") == steps == s.get("steps")
    return s if ok and not s.get("stopped_early") else None
