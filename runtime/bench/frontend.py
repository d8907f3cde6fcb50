"""Front-end section of ``flowdsl bench`` (``--sections frontend``): how fast specs are checked.

* **Cold check**: ``python -m flowdsl check SPEC`` in a fresh interpreter against
  ``python -c "import lark, pydantic, networkx"`` (the libraries the front end cannot do
  without), run alternately; medians of the rounds and their ratio. The compiler imports no
  torch, so the ratio is what the front end itself costs.
* **Warm parse**: ``flowdsl.parse`` of generated specs of 10 … 5,000 layers in one process
  (after one warm-up parse), median of several parses each; the 5,000/1,000 ratio shows whether
  the cost grows linearly with the spec.
"""

from __future__ import annotations

import statistics as st
import subprocess
import sys
import time
from typing import Callable

__all__ = ["spec_of_layers", "cold_check", "warm_parse", "frontend_section"]


def spec_of_layers(n: int, style: str = "repeat") -> str:
    """A Glow-like spec of ``n`` layers (a multiple of 3) on a 4×8×8 image.

    ``repeat``: ``repeat n/3 { actnorm conv1x1 coupling }``; ``flat``: every layer written out;
    ``blocks``: a block of three layers called n/3 times.
    """
    k = max(1, n // 3)
    head = "flow big {\n    input image(channels=4, height=8, width=8)\n"
    step = "actnorm\n    conv1x1(param=lu)\n    coupling(hidden=16, depth=1)\n"
    if style == "repeat":
        body = f"    repeat {k} {{\n    {step}    }}\n"
    elif style == "flat":
        body = ("    " + step) * k
    else:
        return (
            "block step(h=16) {\n    actnorm\n    conv1x1(param=lu)\n    coupling(hidden=$h, depth=1)\n}\n"
            + head
            + "    step(h=16)\n" * k
            + "}\n"
        )
    return head + body + "}\n"


def _run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def cold_check(spec: str, rounds: int = 5) -> dict[str, float]:
    """Median wall time (s) of a cold ``flowdsl check`` and of importing lark, pydantic and
    networkx, alternating round by round (one warm-up of each first)."""
    check = [sys.executable, "-m", "flowdsl", "check", spec]
    libs = [sys.executable, "-c", "import lark, pydantic, networkx"]
    _run(check), _run(libs)
    a, b = [], []
    for _ in range(rounds):
        a.append(_run(check))
        b.append(_run(libs))
    return {"check": st.median(a), "libs": st.median(b), "ratio": st.median(a) / st.median(b)}


def warm_parse(
    sizes=(10, 100, 1000, 5000), styles=("repeat", "flat", "blocks"), repeats: int = 5, clock=time.perf_counter
) -> dict:
    """{style: {layers: median seconds}} of ``flowdsl.parse`` in this (warm) process, by ``clock``
    (wall time by default; ``time.process_time`` counts this process's CPU time only, which other
    work on a shared machine does not inflate)."""
    import flowdsl

    out: dict[str, dict[int, float]] = {}
    for style in styles:
        out[style] = {}
        for n in sizes:
            text = spec_of_layers(n, style)
            flowdsl.parse(text)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = clock()
                flowdsl.parse(text)
                times.append(clock() - t0)
            out[style][n] = st.median(times)
    return out


def frontend_section(spec: str, say: Callable[[str], None] = print, rounds: int = 5) -> str:
    """The ``## Front end`` markdown section."""
    say(f"front end: cold check of {spec} vs importing lark, pydantic, networkx ({rounds} alternating rounds)")
    cold = cold_check(spec, rounds)
    say("front end: warm parse at 10 … 5,000 layers (wall time, then CPU time)")
    warm = {"wall": warm_parse(), "cpu": warm_parse(clock=time.process_time)}
    lines = [
        "## Front end",
        "",
        f'Cold `python -m flowdsl check {spec}` against `python -c "import lark, pydantic, networkx"`, '
        f"{rounds} alternating rounds, medians (fresh interpreters; `check` imports no torch):",
        "",
        "| command | median (s) |",
        "|---|---:|",
        f"| `flowdsl check` | {cold['check']:.3f} |",
        f"| `import lark, pydantic, networkx` | {cold['libs']:.3f} |",
        f"| ratio | **{cold['ratio']:.2f}×** |",
        "",
        "Warm `flowdsl.parse` (median of 5 after a warm-up; Glow steps of actnorm, conv1x1, coupling on 4×8×8; "
        "`repeat` unrolled, `flat` written out, `blocks` one block called per step), in wall time and in this "
        "process's CPU time (which other work on a shared machine does not inflate):",
        "",
        "| spec | clock | 10 | 100 | 1,000 | 5,000 | 5,000 / 1,000 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for clock_name, table in warm.items():
        for style, row in table.items():
            cells = " | ".join(f"{row[n] * 1000:.1f} ms" for n in sorted(row))
            lines.append(f"| {style} | {clock_name} | {cells} | {row[max(row)] / row[1000]:.2f}× |")
    return "\n".join(lines) + "\n"
