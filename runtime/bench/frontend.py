"""Front-end section of ``flowdsl bench`` (``--sections frontend``): how fast specs are checked.

* **Cold check**: ``python -m flowdsl check SPEC`` in a fresh interpreter against
  ``python -c "import lark, pydantic, networkx"`` (the libraries the front end cannot do
  without), run alternately; medians of the rounds and their ratio. The compiler imports no
  torch, so the ratio is what the front end itself costs.
* **Warm parse**: ``flowdsl.parse`` of generated specs of 10 … 5,000 layers in one fresh
  process without torch (after one warm-up parse), median of several rounds; the 5,000/1,000
  ratio shows whether the cost grows linearly with the spec.
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


def warm_parse(sizes=(10, 100, 1000, 5000), styles=("repeat", "flat", "blocks"), repeats: int = 7) -> dict:
    """{style: {layers: median seconds}} of warm ``flowdsl.parse`` (wall time), measured in a fresh
    interpreter that imports only flowdsl's front end (no torch, whose idle worker threads and
    heap would colour the numbers). Each spec is parsed once to warm up; then the sizes of a style
    alternate round by round, ``repeats`` rounds, so drift on a shared machine hits them alike."""
    import json

    code = (
        "import json, statistics as st, sys, time\n"
        "import flowdsl\n"
        "from flowdsl.runtime.bench.frontend import spec_of_layers\n"
        "sizes, styles, repeats = json.loads(sys.argv[1])\n"
        "out = {}\n"
        "for style in styles:\n"
        "    texts = {n: spec_of_layers(n, style) for n in sizes}\n"
        "    for text in texts.values():\n"
        "        flowdsl.parse(text)\n"
        "    times = {n: [] for n in sizes}\n"
        "    for _ in range(repeats):\n"
        "        for n, text in texts.items():\n"
        "            t0 = time.perf_counter()\n"
        "            flowdsl.parse(text)\n"
        "            times[n].append(time.perf_counter() - t0)\n"
        "    out[style] = {n: st.median(v) for n, v in times.items()}\n"
        "assert 'torch' not in sys.modules\n"
        "print(json.dumps(out))\n"
    )
    arg = json.dumps([list(sizes), list(styles), repeats])
    res = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, check=True)
    raw = json.loads(res.stdout.strip().splitlines()[-1])
    return {style: {int(n): v for n, v in row.items()} for style, row in raw.items()}


def frontend_section(spec: str, say: Callable[[str], None] = print, rounds: int = 5) -> str:
    """The ``## Front end`` markdown section."""
    say(f"front end: cold check of {spec} vs importing lark, pydantic, networkx ({rounds} alternating rounds)")
    cold = cold_check(spec, rounds)
    say("front end: warm parse at 10 … 5,000 layers (a fresh interpreter without torch)")
    warm = warm_parse()
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
        "Warm `flowdsl.parse`, wall time, in a fresh interpreter that imports no torch (median of 7 rounds after a "
        "warm-up, the sizes alternating round by round; Glow steps of actnorm, conv1x1, coupling on 4×8×8: "
        "`repeat` unrolled, `flat` written out line by line, `blocks` one block called per step):",
        "",
        "| spec | 10 | 100 | 1,000 | 5,000 | 5,000 / 1,000 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for style, row in warm.items():
        cells = " | ".join(f"{row[n] * 1000:.1f} ms" for n in sorted(row))
        lines.append(f"| {style} | {cells} | {row[max(row)] / row[1000]:.2f}× |")
    return "\n".join(lines) + "\n"
