"""``flowdsl fmt FILE... [--check]``: the formatter (:mod:`flowdsl.fmt`) on files.

    flowdsl fmt specs/                 rewrite every *.flow under specs/ in the canonical layout
    flowdsl fmt --check a.flow b.flow  change nothing; print a unified diff, exit 1 if one would change
    flowdsl fmt -                      standard input to standard output

Files are replaced atomically (a temporary file in the same folder, then ``os.replace``). A file
that cannot be read or does not parse is reported with its located error; the others are still
formatted, and the exit code is 1. Torch-free: a core command of ``flowdsl.cli``.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import stat
import sys
import tempfile
from pathlib import Path

from flowdsl.errors import FlowDSLError
from flowdsl.fmt import format_source

__all__ = ["run_fmt", "register"]


def _expand(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        out.extend(sorted(path.rglob("*.flow")) if path.is_dir() else [path])
    return out


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step (a temporary file in the same folder, then
    ``os.replace``), keeping the file's permission bits."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data  # type: ignore[return-value]  # parse_syntax reports where the bad byte is


def run_fmt(paths: list[str], check: bool = False) -> int:
    """Format spec files in place (``check``: print a unified diff of each file that would change
    and change nothing). ``-`` formats standard input to standard output. Returns the exit code:
    1 when a file does not parse or cannot be read, or (``check``) would change; else 0."""
    if paths == ["-"]:
        text = _decode(sys.stdin.buffer.read())
        out = format_source(text, "<stdin>")  # a FlowDSLError is printed by the command line (exit 1)
        if check:
            if out != text:
                sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), out.splitlines(True), "<stdin>",
                                                           "<stdin> (formatted)"))
                return 1
            return 0
        sys.stdout.write(out)
        return 0
    files = _expand(paths)
    failed = changed = 0
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as e:
            print(FlowDSLError(f"cannot read spec file: {e.strerror}", filename=str(path)).render(), file=sys.stderr)
            failed += 1
            continue
        text = _decode(data)
        try:
            out = format_source(text, str(path))
        except FlowDSLError as e:
            print(e.render(), file=sys.stderr)
            failed += 1
            continue
        if out == text:
            continue
        changed += 1
        if check:
            sys.stdout.writelines(
                difflib.unified_diff(text.splitlines(True), out.splitlines(True), str(path), f"{path} (formatted)")
            )
            print(f"would reformat {path}", file=sys.stderr)
        else:
            _write_atomic(path, out)
            print(f"reformatted {path}")
    n = len(files)
    verb = "would be reformatted" if check else "reformatted"
    print(
        f"{changed} of {n} file{'s' if n != 1 else ''} {verb}" + (f", {failed} with errors" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed or (check and changed) else 0


def _cmd_fmt(args) -> int:
    return run_fmt(args.files, check=args.check)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fmt", help="format spec files in place (canonical layout, comments kept); --check shows a diff"
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="spec files or folders (their *.flow files); - for stdin")
    p.add_argument("--check", action="store_true", help="change nothing; print a diff, exit 1 if a file would change")
    p.set_defaults(func=_cmd_fmt)
