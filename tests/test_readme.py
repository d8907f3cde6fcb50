"""The README's listings and outputs are the real ones (issue #14 item 10).

* a listing marked ``<!-- readme: file PATH -->`` equals the file, and any listing that defines the
  flow of a bundled spec (``flow glow_digits {``) must be so marked: it claims to be that file;
* every ``$ flowdsl ...`` line of a ``console`` block is run (in a folder with ``specs/`` and the
  README's ``<!-- readme: scratch NAME -->`` example files) and its output (stdout, then stderr)
  must be the lines shown; a ``...`` line stands for left-out lines between the first and the
  last ones shown;
* the "parameters" column of the numerical-accuracy table is each spec's ``check`` total, and
  the table lists every bundled spec;
* the exit codes are documented as the CLI has them (usage errors: 1).

When this fails after a change of the specs or of an output, ``python scripts/sync_readme.py``
regenerates those parts of README.md (and ``--check`` shows the difference).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SPECS = sorted((ROOT / "specs").glob("*.flow"))
_FENCE = re.compile(r"^(\s*)```(.*)$")
_MARK = re.compile(r"^\s*<!-- readme: (file|scratch) (\S+) -->\s*$")


def _blocks():
    """(marker or None, info string, content lines with the fence's indent removed, line number)."""
    lines = README.read_text(encoding="utf-8").split("\n")
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, j = m.group(1), i + 1
        while lines[j].rstrip() != indent + "```":
            j += 1
        body = [ln[len(indent) :] if ln.startswith(indent) else ln.strip() for ln in lines[i + 1 : j]]
        mark = _MARK.match(lines[i - 1]) if i else None
        out.append(((mark.group(1), mark.group(2)) if mark else None, m.group(2).strip(), body, i + 1))
        i = j + 1
    return out


BLOCKS = _blocks()
FILE_BLOCKS = [b for b in BLOCKS if b[0] and b[0][0] == "file"]
COMMANDS = []
for _mark, _info, _body, _line in BLOCKS:
    if _info == "console":
        for _k, _text in enumerate(_body):
            if _text.startswith("$ "):
                _end = next((n for n in range(_k + 1, len(_body)) if _body[n].startswith("$ ")), len(_body))
                COMMANDS.append((_text[2:], _body[_k + 1 : _end], _line))


def test_the_readme_has_generated_parts():
    assert FILE_BLOCKS and COMMANDS
    assert any(path == "specs/glow_digits.flow" for (_, path), *_ in FILE_BLOCKS)
    assert any(cmd.startswith("flowdsl check specs/") for cmd, _, _ in COMMANDS)


@pytest.mark.parametrize("block", FILE_BLOCKS, ids=[b[0][1] for b in FILE_BLOCKS])
def test_file_listing_equals_the_file(block):
    (_, path), _, body, line = block
    real = (ROOT / path).read_text(encoding="utf-8").rstrip("\n").split("\n")
    assert body == real, f"README.md:{line}: the listing of {path} differs (run scripts/sync_readme.py)"


def _flow_names() -> dict[str, str]:
    names = {}
    for p in SPECS:
        m = re.search(r"^flow (\w+)\s*\{", p.read_text(encoding="utf-8"), re.M)
        names[m.group(1)] = f"specs/{p.name}"
    return names


def test_every_listing_of_a_bundled_flow_is_marked_as_that_file():
    names = _flow_names()
    for mark, _, body, line in BLOCKS:
        for text in body:
            m = re.match(r"^flow (\w+)\s*\{", text)
            if m and m.group(1) in names:
                assert mark == ("file", names[m.group(1)]), (
                    f"README.md:{line}: a listing of flow {m.group(1)} must be marked "
                    f"<!-- readme: file {names[m.group(1)]} --> (it claims to be that file)"
                )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "specs", d / "specs")
    for mark, _, body, _ in BLOCKS:
        if mark and mark[0] == "scratch":
            (d / mark[1]).write_text("\n".join(body) + "\n", encoding="utf-8")
    return d


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_shown_output_is_the_real_output(command, workdir):
    text, shown, line = command
    argv = shlex.split(text)
    assert argv[0] == "flowdsl"
    res = subprocess.run(
        [sys.executable, "-m", "flowdsl", *argv[1:]], cwd=workdir, capture_output=True, text=True, timeout=300
    )
    real = (res.stdout + res.stderr).rstrip("\n").split("\n")
    assert "Traceback" not in res.stderr
    where = f"README.md:{line}: `{text}` (run scripts/sync_readme.py)"
    if "..." in shown:
        k = shown.index("...")
        head, tail = shown[:k], shown[k + 1 :]
        assert len(head) + len(tail) < len(real), where
        assert real[:k] == head, where
        assert real[len(real) - len(tail) :] == tail, where
    else:
        assert real == shown, where


def _params_rows() -> dict[str, int]:
    rows = {}
    for ln in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| `([\w.-]+\.flow)` \| ([\d,]+) \|", ln)
        if m:
            rows[m.group(1)] = int(m.group(2).replace(",", ""))
    return rows


def test_parameter_column_is_the_check_total():
    import flowdsl

    rows = _params_rows()
    assert sorted(rows) == [p.name for p in SPECS], "the numerical-accuracy table must list every bundled spec"
    for p in SPECS:
        assert rows[p.name] == flowdsl.load(p).graph.model_params(), p.name


def test_exit_codes_are_documented_as_the_cli_has_them():
    text = " ".join(README.read_text(encoding="utf-8").split())
    assert "1 user error" in text and "usage errors of every command" in text and "2 internal error" in text
    assert "`--debug` (before or after the command)" in text and "flowdsl --version" in text


def test_sync_script_restores_a_stale_readme(tmp_path, monkeypatch):
    """scripts/sync_readme.py rewrites the generated parts (listing, outputs, parameter column)
    and leaves the rest; ``--check`` only reports."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sync_readme", ROOT / "scripts" / "sync_readme.py")
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    text = README.read_text(encoding="utf-8")
    stale = (
        text.replace("levels=17)\n    dequantize uniform", "levels=17)\n    dequantize none", 1)
        .replace("2 latent outputs; 76,224", "2 latent outputs; 76,000", 1)
        .replace("| `glow_digits.flow` | 76,224 |", "| `glow_digits.flow` | 1 |", 1)
    )
    assert stale != text and stale.count("76,000") == 1 and "| `glow_digits.flow` | 1 |" in stale
    assert sync.regenerate(stale) == text

    monkeypatch.setattr(sync, "regenerate", lambda old: text)  # main's file handling
    path = tmp_path / "README.md"
    path.write_text(stale, encoding="utf-8")
    assert sync.main(["--check", "--readme", str(path)]) == 1
    assert path.read_text(encoding="utf-8") == stale
    assert sync.main(["--readme", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == text
    assert sync.main(["--check", "--readme", str(path)]) == 0
