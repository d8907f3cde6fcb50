#!/usr/bin/env python3
"""Mutation check: apply known small bugs to copies of the repository; the tests must catch each.

Every mutant is a list of exact replacements (old text -> new text in a file). For each mutant
the tracked files are copied to a fresh temporary folder, the replacements are applied there,
and the mutant's test files run against the copy. An unmutated copy runs first and must pass.

    .venv/bin/python scripts/mutants.py               # all mutants; exit 1 if any survives
    .venv/bin/python scripts/mutants.py --list
    .venv/bin/python scripts/mutants.py --only gaussian-log-sigma-sign squeeze-subpixel-swap
    .venv/bin/python scripts/mutants.py --only ddp-grad-scale-2x --run "python my_probe.py"

How the copy's code gets imported: the venv holds an editable install of the original
checkout. The copy gets a ``sitecustomize.py`` (on ``PYTHONPATH``, which subprocesses such as
torchrun inherit) that puts a finder first on ``sys.meta_path``; it maps the packages of the
copy's ``[tool.setuptools.package-dir]`` (flowdsl -> flowdsl/, flowdsl.runtime -> runtime/, ...)
to the copy's folders. Before a copy's tests run, a child process checks that every edited
module is imported from the copy.

Files may move while the tree is restructured: when a replacement's file is missing, or no
longer holds the old text, every tracked ``.py`` file of the copy is searched for the old text,
and a single hit is used (and reported). No hit, or several, is an error: the mutant must then
be updated, never silently skipped.

The tests run with the project's default options (``-m 'not slow'`` from pyproject.toml), so
a caught mutant is caught by the default test run.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_table():
    """The mutants (``scripts/mutations.py``, loaded by path: ``scripts/`` is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parent / "mutations.py"
    spec = importlib.util.spec_from_file_location("flowdsl_mutations_table", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


_TABLE = _load_table()
Edit, Mutant, MUTANTS = _TABLE.Edit, _TABLE.Mutant, _TABLE.MUTANTS



# -- copies --------------------------------------------------------------------------------
def tracked_files(root: Path) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


def package_dirs(pyproject: Path) -> dict[str, str]:
    """``[tool.setuptools.package-dir]`` of a pyproject.toml: {package: folder}."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    mapping = data.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    if not mapping:
        raise SystemExit(f"{pyproject}: no [tool.setuptools.package-dir]; cannot map the copy's packages")
    return {str(k): str(v) for k, v in mapping.items()}


SITECUSTOMIZE = '''\
"""Written by scripts/mutants.py: import the flowdsl packages from this copy of the repository."""
import importlib.util
import sys

MAPPING = {mapping!r}


class _CopyFinder:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        folder = MAPPING.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder + "/__init__.py", submodule_search_locations=[folder])


sys.meta_path.insert(0, _CopyFinder)
'''


def make_copy(files: list[str], dest: Path) -> dict[str, str]:
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, target)
    mapping = {pkg: str((dest / folder).resolve()) for pkg, folder in package_dirs(dest / "pyproject.toml").items()}
    site = dest / ".mutant_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(mapping=mapping), encoding="utf-8")
    return mapping


def copy_env(dest: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    env["PYTHONPATH"] = str(dest / ".mutant_site")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def module_name(rel: str, mapping_rel: dict[str, str]) -> str | None:
    """Dotted module name of the file ``rel`` (relative path) under the package-dir mapping."""
    p = Path(rel)
    if p.suffix != ".py":
        return None
    best = None
    for pkg, folder in mapping_rel.items():
        f = Path(folder)
        if p.parts[: len(f.parts)] == f.parts and (best is None or len(f.parts) > len(Path(mapping_rel[best]).parts)):
            best = pkg
    if best is None:
        return None
    rest = p.with_suffix("").parts[len(Path(mapping_rel[best]).parts) :]
    if rest and rest[-1] == "__init__":
        rest = rest[:-1]
    return ".".join((best, *rest))


def check_imports_from_copy(dest: Path, files: list[str]) -> None:
    """A child process imports every edited module and must find it in the copy."""
    mapping_rel = package_dirs(dest / "pyproject.toml")
    mods = [m for m in (module_name(f, mapping_rel) for f in files) if m]
    mods = mods or ["flowdsl"]
    code = f"import importlib, sys\nfor name in {mods!r}:\n    print(name, importlib.import_module(name).__file__)\n"
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=dest, env=copy_env(dest), capture_output=True, text=True, timeout=300
    )
    if r.returncode != 0:
        raise SystemExit(f"importing the copy's modules failed:\n{r.stdout}\n{r.stderr}")
    for line in r.stdout.splitlines():
        name, origin = line.split(" ", 1)
        if not Path(origin).resolve().is_relative_to(dest.resolve()):
            raise SystemExit(
                f"{name} was imported from {origin}, not from the copy {dest}: the redirection does not work"
            )


# -- mutations -----------------------------------------------------------------------------
class MutationError(Exception):
    pass


def locate(m: Mutant, e: Edit, root: Path, files: list[str]) -> str:
    """The file (relative to ``root``) that holds ``e.old`` exactly once: ``e.path``, or the one
    source file of the tree that holds it when the file has moved. Raises MutationError otherwise."""
    target = e.path
    text = (root / target).read_text(encoding="utf-8") if (root / target).is_file() else None
    if text is None or e.old not in text:
        hits = [
            f
            for f in files
            if f.endswith(".py")
            and not f.startswith(("tests/", "scripts/"))
            and (root / f).is_file()
            and e.old in (root / f).read_text(encoding="utf-8")
        ]
        if len(hits) != 1:
            where = "nowhere" if not hits else ", ".join(hits)
            raise MutationError(
                f"{m.name}: the text to replace is not in {e.path} and is found {where} in the tree:\n    {e.old!r}"
            )
        target = hits[0]
        text = (root / target).read_text(encoding="utf-8")
    n = text.count(e.old)
    if n != 1:
        raise MutationError(
            f"{m.name}: the text to replace occurs {n} times in {target} (must be once):\n    {e.old!r}"
        )
    return target


def apply(m: Mutant, dest: Path, files: list[str]) -> list[str]:
    """Apply every edit of ``m`` in ``dest``; returns the edited files (relative)."""
    edited: list[str] = []
    for e in m.edits:
        target = locate(m, e, dest, files)
        if target != e.path:
            print(f"    note: {m.name}: {e.path} no longer holds the text; found it in {target}")
        text = (dest / target).read_text(encoding="utf-8")
        (dest / target).write_text(text.replace(e.old, e.new), encoding="utf-8")
        edited.append(target)
    return edited


# -- running -------------------------------------------------------------------------------
FAILED_RE = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", re.M)


def run_tests(
    dest: Path, tests: tuple[str, ...], extra: tuple[str, ...], first_failure: bool
) -> tuple[int, str, float]:
    for t in tests:
        if not (dest / t.split("::")[0]).is_file():
            raise MutationError(f"test file {t.split('::')[0]} does not exist")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rfE",
        "-p",
        "no:randomly",
        *(["-x"] if first_failure else []),
        *extra,
        *tests,
    ]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=dest, env=copy_env(dest), capture_output=True, text=True, timeout=3600)
    return r.returncode, r.stdout + r.stderr, time.time() - t0


def with_copy(files: list[str], keep: bool):
    class _Copy:
        def __enter__(self):
            self.path = Path(tempfile.mkdtemp(prefix="flowdsl-mutant-"))
            make_copy(files, self.path)
            return self.path

        def __exit__(self, *exc):
            if keep:
                print(f"    kept {self.path}")
            else:
                shutil.rmtree(self.path, ignore_errors=True)

    return _Copy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--skip-baseline", action="store_true", help="do not run the unmutated copy first")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies")
    ap.add_argument("--run", metavar="CMD", help="instead of the tests, run CMD in each mutated copy (a probe)")
    args = ap.parse_args(argv)

    by_name = {m.name: m for m in MUTANTS}
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:34} {m.what}\n{'':34} tests: {' '.join(m.tests)}")
        return 0
    unknown = sorted(set(args.only or ()) - set(by_name))
    if unknown:
        print(f"unknown mutants: {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2
    chosen = [by_name[n] for n in args.only] if args.only else list(MUTANTS)
    files = tracked_files(ROOT)

    if args.run:
        for m in chosen:
            with with_copy(files, args.keep) as dest:
                edited = apply(m, dest, files)
                check_imports_from_copy(dest, edited)
                print(f"== {m.name}: {args.run}", flush=True)
                subprocess.run(shlex.split(args.run), cwd=dest, env=copy_env(dest))
        return 0

    failures = 0
    if not args.skip_baseline:
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        extra = tuple(dict.fromkeys(x for m in chosen for x in m.extra))
        print(f"baseline: the unmutated copy must pass {len(tests)} test selections ...", flush=True)
        with with_copy(files, args.keep) as dest:
            check_imports_from_copy(
                dest, sorted({e.path for m in chosen for e in m.edits if (dest / e.path).is_file()})
            )
            code, out, secs = run_tests(dest, tests, extra, first_failure=False)
        if code != 0:
            print(out[-6000:])
            print(f"baseline FAILED (pytest exit {code}): fix the tests before judging mutants", file=sys.stderr)
            return 1
        print(f"baseline: passed ({secs:.0f} s)", flush=True)

    results = []
    for m in chosen:
        with with_copy(files, args.keep) as dest:
            try:
                edited = apply(m, dest, files)
                check_imports_from_copy(dest, edited)
                code, out, secs = run_tests(dest, m.tests, m.extra, first_failure=True)
            except MutationError as e:
                results.append((m, "ERROR", str(e)))
                print(f"  ERROR     {m.name}: {e}", flush=True)
                failures += 1
                continue
        if code == 1:
            caught = FAILED_RE.findall(out)
            by = caught[0] if caught else "(a failing test)"
            results.append((m, "caught", by))
            print(f"  caught    {m.name:34} by {by} ({secs:.0f} s)", flush=True)
        elif code == 0:
            results.append((m, "SURVIVED", ""))
            print(f"  SURVIVED  {m.name:34} {m.what}; tests: {' '.join(m.tests)} ({secs:.0f} s)", flush=True)
            failures += 1
        else:  # collection error, usage error, interrupted: the mutant is broken, not caught
            results.append((m, "ERROR", f"pytest exit {code}"))
            print(f"  ERROR     {m.name}: pytest exit {code}\n{out[-3000:]}", flush=True)
            failures += 1
    n_caught = sum(1 for _, status, _ in results if status == "caught")
    print(f"{n_caught}/{len(results)} mutants caught")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
