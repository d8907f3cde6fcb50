"""Memory section of ``flowdsl bench``: peak resident memory of one call, in fresh processes.

For each spec and each mode of :data:`MEMORY_MODES` a subprocess (``python -m
flowdsl.runtime.bench.memory --memory-probe SPEC MODE BATCH THREADS``) prepares the model as the
timing probes do (data-dependent initialisation, parameters randomised), makes one warm-up call,
resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) and reports

    peak     VmHWM − VmRSS before the call: the peak resident-memory increase of one call;
    saved    the bytes autograd keeps for backward (``saved_tensors_hooks``), for the modes
             that build a graph;
    seconds  the median of three more calls.

glibc is told to map every block of 4 KiB or more on its own and to return freed memory at once
(``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``), so the peak follows the live tensors
rather than the allocator's caching. A spec without layers (e.g. an FDRL spec: no bijector, no
parameters) has nothing to train or fuse; its rows say so instead of timing an empty call.
"""

from __future__ import annotations

import gc
import json
import os
import statistics as st
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

__all__ = ["MEMORY_MODES", "memory_table"]

MEMORY_MODES = {
    "train": "training step (loss.backward), unfused",
    "train_recompute": "training step, invertible memory (recompute from outputs)",
    "infer_unfused": "log_prob under no_grad, unfused",
    "infer_fused": "log_prob under no_grad, fused",
    "input_grad_unfused": "∂ log_prob / ∂x, unfused",
    "input_grad_fused": "∂ log_prob / ∂x, fused",
}


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _memory_probe(path: str, mode: str, batch: int, threads: int) -> dict:
    """Run in a fresh process: the peak RSS increase (bytes) and time of one call of ``mode``."""
    torch.set_num_threads(threads)
    from flowdsl.runtime.bench.timing import prepared_model
    from flowdsl.runtime.training.memory import InvertibleMemory

    _, model, x = prepared_model(path, batch)
    if not len(model.steps):
        return {"skip": "no layers: nothing to train or fuse"}
    fused = model.fuse() if mode.endswith("fused") else None
    saved: list[int] = []

    def hook(t):
        saved.append(t.numel() * t.element_size())
        return t

    def run():
        if mode in ("train", "train_recompute"):
            model.train()
            m = InvertibleMemory(model) if mode == "train_recompute" else model
            with torch.autograd.graph.saved_tensors_hooks(hook, lambda t: t):
                loss = -m.log_prob(x).mean()
            loss.backward()
        elif mode.startswith("infer"):
            with torch.no_grad():
                (fused or model).log_prob(x)
        else:
            xi = x.clone().requires_grad_(True)
            with torch.autograd.graph.saved_tensors_hooks(hook, lambda t: t):
                lp = (fused or model).log_prob(xi).sum()
            lp.backward()

    run()  # warm-up: lazy initialisation, oneDNN primitive caches
    model.zero_grad(set_to_none=True)
    saved.clear()
    gc.collect()
    rss0 = _status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak-RSS counter (VmHWM)
    except OSError:
        pass
    run()
    peak = _status("VmHWM") - rss0
    kept = sum(saved)
    times = []
    for _ in range(3):
        model.zero_grad(set_to_none=True)
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return {"peak": peak, "saved": kept, "seconds": st.median(times)}


def memory_table(paths: list[str], batch: int, threads: int, say: Callable[[str], None] = print) -> str:
    """The markdown table of every mode for every spec (one fresh subprocess per cell row)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="4096", MALLOC_TRIM_THRESHOLD_="4096")
    rows = [
        "| spec | measurement | peak RSS increase (MB) | kept for backward (MB) | time per call (s, median of 3) |",
        "|---|---|---:|---:|---:|",
    ]
    for path in paths:
        name = Path(path).stem
        for mode, label in MEMORY_MODES.items():
            cmd = [
                sys.executable,
                "-m",
                "flowdsl.runtime.bench.memory",
                "--memory-probe",
                path,
                mode,
                str(batch),
                str(threads),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                err = out.stderr.strip().splitlines()[-1][:80] if out.stderr.strip() else "?"
                rows.append(f"| {name} | {label} | failed: {err} | | |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if "skip" in r:
                rows.append(f"| {name} | all | {r['skip']} | | |")
                say(f"  memory {name}: {r['skip']}")
                break
            kept = f"{r['saved'] / 1e6:.1f}" if mode.startswith(("train", "input")) else "–"
            rows.append(f"| {name} | {label} | {r['peak'] / 1e6:.1f} | {kept} | {r['seconds']:.3f} |")
            say(f"  memory {name} {mode}: {r['peak'] / 1e6:.1f} MB")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # the probes run in fresh processes
    if len(sys.argv) == 6 and sys.argv[1] == "--memory-probe":
        print(json.dumps(_memory_probe(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
    else:
        print("usage: flowdsl bench SPEC... (this module's own entry point is internal)", file=sys.stderr)
        sys.exit(2)
