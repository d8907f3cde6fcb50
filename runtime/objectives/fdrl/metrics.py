"""``metrics.csv`` and ``curves.png`` of an FDRL run.

Columns: ``step, lr, train_loss, grad_norm, val_energy, source_energy, seconds``: the Bregman
loss averaged over the steps since the previous row, and on evaluation rows the energy distance
of EMA samples and of source samples to the validation split. The file format, its reading
and the formatting of values are the MLE training's (:mod:`flowdsl.runtime.training.metrics`);
on ``--resume`` rows after the checkpoint's step are dropped.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from pathlib import Path
from typing import Any, Optional

from flowdsl.runtime.training.metrics import _fmt, read_metric_rows

__all__ = ["FDRL_COLUMNS", "read_fdrl_metrics", "FDRLMetricsLog", "plot_fdrl_curves"]

FDRL_COLUMNS = ("step", "lr", "train_loss", "grad_norm", "val_energy", "source_energy", "seconds")


def read_fdrl_metrics(path: str | os.PathLike) -> list[dict[str, Optional[float]]]:
    return read_metric_rows(path, FDRL_COLUMNS)


class FDRLMetricsLog:
    """``metrics.csv`` with the FDRL columns; on resume rows after the checkpoint's step are dropped."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def start(self, resume_step: Optional[int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keep = [
            r
            for r in read_fdrl_metrics(self.path)
            if resume_step is not None and r["step"] is not None and r["step"] <= resume_step
        ]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(FDRL_COLUMNS)
        for r in keep:
            w.writerow([_fmt(int(r[k]) if k == "step" else r[k]) for k in FDRL_COLUMNS])
        self.path.write_text(buf.getvalue())

    def write(self, **row: Any) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(k)) for k in FDRL_COLUMNS])


def plot_fdrl_curves(metrics_csv: str | os.PathLike, out_png: str | os.PathLike, title: str = "") -> None:
    """Loss against the step, and the validation energy distance of EMA samples vs the source's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowdsl.runtime.training.checkpoint import atomic_write

    rows = read_fdrl_metrics(metrics_csv)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    pts = [(r["step"], r["train_loss"]) for r in rows if r["train_loss"] is not None and math.isfinite(r["train_loss"])]
    if pts:
        a1.plot(*zip(*pts), "-", linewidth=1.2, label="Bregman loss (train)")
    for key, label, style in (("val_energy", "FDRL samples (EMA)", "o-"), ("source_energy", "source", "--")):
        pts = [(r["step"], r[key]) for r in rows if r[key] is not None and math.isfinite(r[key]) and r[key] > 0]
        if pts:
            a2.plot(*zip(*pts), style, markersize=3, linewidth=1.2, label=label)
    a2.set_yscale("log")
    if title:
        fig.suptitle(title)
    for ax, ylabel in ((a1, "loss"), (a2, "energy distance to validation data")):
        ax.set(xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.tight_layout()
    atomic_write(out_png, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
