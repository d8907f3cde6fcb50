"""The export folder as one unit: its ONNX files are replaced together or not at all.

An export is written into a staging folder beside the target, ``<parent>/.<name>.export-<id>``,
with every file carrying the same ``flowdsl.export_id`` in its metadata and a manifest
``export.json`` (export id, files, their sha256) written last. Then the staging folder takes the
target's place:

* no target yet: ``rename(staging, target)``, atomic;
* a target: ``renameat2(staging, target, RENAME_EXCHANGE)`` swaps the two folders atomically
  (Linux); the old export then sits at the staging name and is deleted. Where the exchange is
  not available the fallback is ``rename(target, .<name>.old-<id>)`` then
  ``rename(staging, target)``: between the two the target is missing, never mixed (an
  exception there puts the old folder back).

So a reader (and a process killed at any instant) sees the previous complete folder or the new
one. Leftovers of a killed export are handled by :func:`recover` at the start of the next export:
a complete staged folder is moved into a missing target (roll forward), or else a complete old
one (roll back); anything else is deleted.

The target must hold only an export (:data:`EXPORT_FILES` and the manifest) or be new: a folder
with other files is refused rather than swapped away. :func:`verify_export` and
:func:`check_same_export` let loaders and parity checks refuse files of two different exports.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable

from flowdsl.errors import FlowDSLError
from flowdsl.outputs import OutputError, fsync_dir

__all__ = [
    "EXPORT_FILES",
    "MANIFEST",
    "new_export_id",
    "prepare_target",
    "recover",
    "stage_folder",
    "commit",
    "write_manifest",
    "export_id_of",
    "check_same_export",
    "verify_export",
]

#: the files an export folder may hold (``prior.onnx`` only when the prior can be exported)
EXPORT_FILES = ("forward.onnx", "inverse.onnx", "prior.onnx")
MANIFEST = "export.json"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def new_export_id() -> str:
    return uuid.uuid4().hex


def _leftovers(target: Path) -> list[Path]:
    parent = target.parent
    if not parent.is_dir():
        return []
    prefixes = (f".{target.name}.export-", f".{target.name}.old-")
    return sorted(p for p in parent.iterdir() if p.name.startswith(prefixes))


def _complete(folder: Path) -> bool:
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        return all(_sha256(folder / f) == h for f, h in m["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def recover(target: Path) -> list[str]:
    """Clean up after an export that was killed: when ``target`` is missing, move a complete staged
    export in (roll forward), else a complete old one back (roll back); delete every other
    leftover. Returns what was done."""
    done = []
    for prefix in (f".{target.name}.export-", f".{target.name}.old-"):
        if target.exists():
            break
        for p in _leftovers(target):
            if p.name.startswith(prefix) and _complete(p):
                os.rename(p, target)
                fsync_dir(target.parent)
                done.append(f"recovered the export left in {p.name}")
                break
    for p in _leftovers(target):
        shutil.rmtree(p, ignore_errors=True)
        done.append(f"removed {p.name}")
    return done


def prepare_target(out_dir: str | os.PathLike) -> Path:
    """The absolute target folder, after refusing what must not be swapped: a path that is not a
    folder, or a folder with files that are not an export's. The parent folders are made."""
    target = Path(os.path.abspath(os.fspath(out_dir)))
    if target == Path(os.path.abspath(os.getcwd())) or target.parent == target:
        raise OutputError(
            "the export folder is replaced as a whole, so it cannot be the current folder or a root",
            filename=os.fspath(out_dir),
            notes=["name a subfolder, e.g. --out onnx"],
        )
    if target.exists() or target.is_symlink():
        if target.is_symlink() or not target.is_dir():
            raise OutputError(
                "the export folder must be a folder (it is replaced as a whole), not a file or symlink",
                filename=os.fspath(out_dir),
            )
        foreign = sorted(p.name for p in target.iterdir() if p.name not in (*EXPORT_FILES, MANIFEST))
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise OutputError(
                f"the export folder holds other files ({shown}); an export replaces its folder as a whole",
                filename=os.fspath(out_dir),
                notes=["export into a new or empty folder, or one that holds only a previous export"],
            )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FlowDSLError(f"cannot create the output directory {str(out_dir)!r}: {e.strerror}") from None
    if not target.parent.is_dir():
        raise FlowDSLError(f"cannot create the output directory {str(out_dir)!r}: its parent is not a folder")
    return target


def stage_folder(target: Path, export_id: str) -> Path:
    """A new, empty staging folder beside ``target`` for export ``export_id``."""
    stage = target.parent / f".{target.name}.export-{export_id}"
    stage.mkdir()
    return stage


def write_manifest(stage: Path, export_id: str, files: Iterable[str], extra: dict | None = None) -> None:
    """``export.json``: the export id and the sha256 of each file; written (and fsync'ed) last."""
    manifest = {"export_id": export_id, "files": {f: _sha256(stage / f) for f in files}, **(extra or {})}
    for f in manifest["files"]:
        fd = os.open(stage / f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    path = stage / MANIFEST
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(manifest, indent=2) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(stage)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False when the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def commit(stage: Path, target: Path) -> None:
    """Put the complete ``stage`` folder in ``target``'s place (see the module docstring)."""
    if not target.exists():
        os.rename(stage, target)
    elif _exchange(stage, target):
        shutil.rmtree(stage, ignore_errors=True)  # now the old export
    else:
        old = target.parent / f".{target.name}.old-{stage.name.rsplit('-', 1)[-1]}"
        try:
            os.rename(target, old)
            os.rename(stage, target)
        except BaseException:  # interrupted or failed between the renames: put the old export back
            if not target.exists() and old.exists():
                os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)


def export_id_of(path: str | os.PathLike) -> str | None:
    """The ``flowdsl.export_id`` in an ONNX file's metadata (None when it has none)."""
    import onnx

    m = onnx.load(os.fspath(path), load_external_data=False)
    return next((p.value for p in m.metadata_props if p.key == "flowdsl.export_id"), None)


def check_same_export(*paths: str | os.PathLike) -> str | None:
    """The export id the files share; raises :class:`FlowDSLError` when they come from different
    exports (or only some carry an id). None when none has one (files of an older flowdsl)."""
    ids = {os.fspath(p): export_id_of(p) for p in paths}
    values = set(ids.values())
    if len(values) == 1:
        return values.pop()
    shown = ", ".join(f"{Path(p).name}: {v or 'none'}" for p, v in ids.items())
    raise FlowDSLError(
        f"the ONNX files come from different exports (export ids {shown})",
        filename=os.fspath(Path(next(iter(ids))).parent),
        notes=["export again into that folder; the files of one export carry one id"],
    )


def verify_export(folder: str | os.PathLike) -> dict:
    """Check an export folder: the manifest, every listed file's sha256 and the one export id in
    their metadata. Returns the manifest; raises :class:`FlowDSLError` otherwise."""
    f = Path(folder)
    try:
        m = json.loads((f / MANIFEST).read_text(encoding="utf-8"))
        files = dict(m["files"])
        eid = m["export_id"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FlowDSLError(f"not a complete export folder (no readable {MANIFEST}: {e})", filename=str(f)) from None
    for name, h in files.items():
        if not (f / name).is_file() or _sha256(f / name) != h:
            raise FlowDSLError(f"{name} is missing or was changed after the export", filename=str(f))
    got = check_same_export(*(f / n for n in files))
    if got != eid:
        raise FlowDSLError(f"the files carry export id {got}, the manifest {eid}", filename=str(f))
    return m
