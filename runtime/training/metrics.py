"""``metrics.csv`` (one row per logging interval or evaluation) and ``curves.png``.

Columns: ``step, lr, train_loss, train_bpd, grad_norm, val_bpd, test_bpd, seconds``.
``train_loss`` is the mean training loss (nats per dimension of x on the [0, 1) scale) and
``train_bpd`` the same in bits/dim of the data, both averaged over the steps since the previous
row; ``val_bpd`` / ``test_bpd`` are filled on evaluation rows only. On ``--resume`` rows after
the checkpoint's step are dropped, so the file always matches the weights.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

__all__ = ["COLUMNS", "MetricsLog", "read_metrics", "read_metric_rows", "plot_curves", "prepare_plotting"]

COLUMNS = ("step", "lr", "train_loss", "train_bpd", "grad_norm", "val_bpd", "test_bpd", "seconds")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Optional[float]]]:
    return read_metric_rows(path)


def read_metric_rows(path: str | os.PathLike, columns: Sequence[str] = COLUMNS) -> list[dict[str, Optional[float]]]:
    """The rows of a metrics CSV as ``{column: float, or None where empty}`` for ``columns``
    (default: this module's :data:`COLUMNS`, i.e. :func:`read_metrics`); other runs' logs, such
    as FDRL's, pass their own column list. A missing file gives no rows."""
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    with open(p, newline="") as f:
        for r in csv.DictReader(f):
            try:
                rows.append({k: (float(r[k]) if r.get(k) not in (None, "") else None) for k in columns})
            except ValueError:
                continue  # a line cut by a crash
    return rows


class MetricsLog:
    """Append-only CSV writer (rank 0 only); ``truncate_after(step)`` for resumed runs."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def start(self, resume_step: Optional[int]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keep = []
        if resume_step is not None:
            keep = [r for r in read_metrics(self.path) if r["step"] is not None and r["step"] <= resume_step]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        for r in keep:
            w.writerow([_fmt(int(r[k]) if k == "step" else r[k]) for k in COLUMNS])
        with open(self.path, "w", newline="") as f:
            f.write(buf.getvalue())

    def write(self, **row: Any) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(k)) for k in COLUMNS])
            f.flush()


def prepare_plotting() -> None:
    """Import matplotlib (Agg) now: its first import can take seconds, which a run under
    ``--max-time`` would rather spend at its start, where the time limit sees it, than at its end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def plot_curves(
    metrics_csv: str | os.PathLike,
    out_png: str | os.PathLike,
    title: str = "",
    reference: Optional[dict[str, float]] = None,
) -> None:
    """Plot train / validation / test bits/dim against the step (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowdsl.runtime.training.checkpoint import atomic_write

    rows = read_metrics(metrics_csv)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for key, label, style in (("train_bpd", "train", "-"), ("val_bpd", "validation", "o-"), ("test_bpd", "test", "s-")):
        pts = [(r["step"], r[key]) for r in rows if r[key] is not None and math.isfinite(r[key])]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, style, label=label, markersize=3, linewidth=1.2)
    for name, value in (reference or {}).items():
        ax.axhline(value, color="0.6", linestyle="--", linewidth=0.8)
        ax.annotate(name, (0, value), xycoords=("axes fraction", "data"), fontsize=7, color="0.4", va="bottom")
    finite = [
        r[k] for r in rows for k in ("train_bpd", "val_bpd", "test_bpd") if r[k] is not None and math.isfinite(r[k])
    ]
    if finite:
        lo = min(finite)
        hi = sorted(finite)[int(0.95 * (len(finite) - 1))]
        span = max(hi - lo, 0.05 * max(1.0, abs(hi)))
        ax.set_ylim(lo - 0.05 * span, hi + 0.15 * span)
    ax.set_xlabel("step")
    ax.set_ylabel("bits / dim")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.tight_layout()
    atomic_write(out_png, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
