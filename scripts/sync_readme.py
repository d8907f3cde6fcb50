"""Regenerate the generated parts of README.md from the real files and command outputs.

What is generated (``tests/test_readme.py`` checks the same, independently):

* the fenced block right after ``<!-- readme: file PATH -->`` is the file PATH of the repository,
  verbatim (e.g. the "first spec" listing is ``specs/glow_digits.flow``);
* the fenced block right after ``<!-- readme: scratch NAME -->`` is an example file that is not
  in the repository: it is left as written and saved as NAME in the folder the commands run in;
* every ```` ```console ```` block: a line ``$ flowdsl ...`` is a command, the lines up to the next
  command its output (stdout, then stderr). A line ``...`` stands for lines left out: the lines
  above it are the first lines of the output, the lines below it the last ones (their numbers
  are kept when the block is regenerated);
* the "parameters" column of the "Numerical accuracy" table: each spec's total from
  ``flowdsl check`` (bijectors and prior).

Commands run as ``python -m flowdsl ...`` in a scratch folder holding the scratch files and a copy
of ``specs/``, so their output shows the same relative paths as the README.

    .venv/bin/python scripts/sync_readme.py           # rewrite README.md in place
    .venv/bin/python scripts/sync_readme.py --check   # exit 1 with a diff when README.md is stale
"""

from __future__ import annotations

import argparse
import difflib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^\s*<!-- readme: (file|scratch) (\S+) -->\s*$")
ELISION = "..."


def fenced_blocks(lines: list[str]) -> list[tuple[int, int, str, str]]:
    """(first content line, line of the closing fence, info string, indent) of every fenced block
    (an indented block, e.g. in a list item, has its content indented as its fence)."""
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(.*)$", lines[i])
        if m:
            indent = m.group(1)
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != indent + "```":
                j += 1
            out.append((i + 1, j, m.group(2).strip(), indent))
            i = j + 1
        else:
            i += 1
    return out


def marker_of(lines: list[str], fence_line: int) -> tuple[str, str] | None:
    """The ``<!-- readme: KIND PATH -->`` marker on the line above a block's opening fence."""
    if fence_line >= 1:
        m = MARKER.match(lines[fence_line - 1])
        if m:
            return m.group(1), m.group(2)
    return None


def dedent(lines: list[str], indent: str) -> list[str]:
    return [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines]


def indent_lines(lines: list[str], indent: str) -> list[str]:
    return [indent + line if line else line for line in lines]


def run_command(command: str, cwd: Path) -> list[str]:
    """Output lines of ``$ flowdsl ...`` (stdout, then stderr), run in ``cwd``."""
    argv = shlex.split(command)
    if not argv or argv[0] != "flowdsl":
        raise SystemExit(f"README console blocks may only run flowdsl, not: {command}")
    res = subprocess.run(
        [sys.executable, "-m", "flowdsl", *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    return (res.stdout + res.stderr).rstrip("\n").split("\n")


def render_output(shown: list[str], real: list[str]) -> list[str]:
    """``real`` shaped like ``shown``: with the same number of lines around a ``...`` line."""
    if ELISION in shown:
        k = shown.index(ELISION)
        tail = len(shown) - k - 1
        if k + tail < len(real):
            return real[:k] + [ELISION] + (real[len(real) - tail :] if tail else [])
    return real


def console_parts(body: list[str]) -> list[tuple[str, list[str]]]:
    """(command, shown output lines) of each ``$ `` line of a console block."""
    parts: list[tuple[str, list[str]]] = []
    for line in body:
        if line.startswith("$ "):
            parts.append((line[2:], []))
        elif parts:
            parts[-1][1].append(line)
    return parts


def scratch_folder(lines: list[str], blocks) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="readme-"))
    shutil.copytree(ROOT / "specs", tmp / "specs")
    for start, end, _, indent in blocks:
        mark = marker_of(lines, start - 1)
        if mark and mark[0] == "scratch":
            (tmp / mark[1]).write_text("\n".join(dedent(lines[start:end], indent)) + "\n", encoding="utf-8")
    return tmp


def spec_params(path: Path) -> int:
    """The parameter total ``flowdsl check`` prints (bijectors and prior)."""
    import flowdsl

    return flowdsl.load(path).graph.model_params()


def sync_params_table(lines: list[str]) -> list[str]:
    """The "parameters" column of every table row that starts with a bundled spec's file name."""
    out = []
    row = re.compile(r"^\| `([\w.-]+\.flow)` \| ([\d,]+) \|")
    for line in lines:
        m = row.match(line)
        if m and (ROOT / "specs" / m.group(1)).is_file():
            n = spec_params(ROOT / "specs" / m.group(1))
            line = line[: m.start(2)] + f"{n:,}" + line[m.end(2) :]
        out.append(line)
    return out


def regenerate(text: str) -> str:
    lines = text.split("\n")
    blocks = fenced_blocks(lines)
    tmp = scratch_folder(lines, blocks)
    try:
        # replace from the end so earlier line numbers stay valid
        for start, end, info, indent in reversed(blocks):
            mark = marker_of(lines, start - 1)
            if mark and mark[0] == "file":
                new = (ROOT / mark[1]).read_text(encoding="utf-8").rstrip("\n").split("\n")
            elif info == "console":
                new = []
                for command, shown in console_parts(dedent(lines[start:end], indent)):
                    new += [f"$ {command}", *render_output(shown, run_command(command, tmp))]
            else:
                continue
            lines[start:end] = indent_lines(new, indent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join(sync_params_table(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report (exit 1 with a diff) when README.md is stale")
    ap.add_argument("--readme", default=str(ROOT / "README.md"), help="the file to sync (default README.md)")
    args = ap.parse_args(argv)
    path = Path(args.readme)
    old = path.read_text(encoding="utf-8")
    new = regenerate(old)
    if new == old:
        print(f"{path}: up to date")
        return 0
    if args.check:
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), str(path), "generated"))
        return 1
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)  # atomic
    print(f"{path}: regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
