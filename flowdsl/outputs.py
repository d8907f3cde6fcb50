"""User-named outputs: every file a command writes at a path the user gave goes through here.

    check_output_path(path)                        -> Path to write (refuses what must not be replaced)
    atomic_write(path, write, make_parents=False)  write(fileobj) into a temp file, fsync, rename over path
    atomic_write_bytes(path, data) / atomic_write_text(path, text)
    check_output_format(path, formats, what)       the lower-case suffix, or refuse the name

A write goes to a temporary file in the target's folder, is flushed and fsync'ed, and is renamed
over the target with ``os.replace`` (then the folder is fsync'ed): a crash leaves the old file
or the new one, never half of one. Renaming replaces whatever has the name, so the target is
checked first and only these are written:

* a name that does not exist yet (its folder must exist unless ``make_parents=True``);
* an existing regular file;
* a symlink to a regular file: the file it points to is replaced (the link stays a link).

Anything else — a folder, a character or block device (``/dev/null``, ``/dev/full``), a FIFO, a
socket, a symlink to one of those, a dangling symlink — is refused with an :class:`OutputError`
(a :class:`FlowDSLError`: exit 1), before anything is computed when the command checks early.
Torch-free, so light commands (``graph``) can use it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from flowdsl.errors import FlowDSLError

__all__ = [
    "OutputError",
    "check_output_path",
    "check_output_format",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
]


#: temporary files are named ``.<name>.<random>.tmp`` beside their target
TMP_SUFFIX = ".tmp"


class OutputError(FlowDSLError):
    """An output path that cannot or must not be written (folder, device, FIFO, missing folder ...);
    ``filename`` is the path, so it renders as ``PATH: error: ...``."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output_path(path: str | os.PathLike, make_parents: bool = False, what: str = "output") -> Path:
    """The path a write to ``path`` replaces (a symlink's target), after refusing anything that is
    not a regular file or a new name; with ``make_parents`` the missing folders are created.

    Raises:
        OutputError: ``path`` is empty, a folder, a device, a FIFO, a socket, a symlink to one of
            those or a dangling symlink, or its folder is missing (and not to be made) or not a folder.
    """
    text = os.fspath(path)
    if not text:
        raise OutputError(f"the {what} path is empty", filename=what)
    p = Path(text)
    try:
        lst = os.lstat(p)
    except FileNotFoundError:
        lst = None
    except OSError as e:
        raise OutputError(f"cannot write the {what}: {e.strerror}", filename=text) from None
    if lst is not None and stat.S_ISLNK(lst.st_mode):
        try:
            st = os.stat(p)
        except OSError:
            raise OutputError(
                f"refusing to write the {what}: it is a symlink to a missing or unreachable target", filename=text
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(
                f"refusing to write the {what}: it is a symlink to {_kind(st.st_mode)}",
                filename=text,
                notes=["only regular files and new names are written; name a file"],
            )
        p = Path(os.path.realpath(p))
    elif lst is not None and not stat.S_ISREG(lst.st_mode):
        raise OutputError(
            f"refusing to write the {what}: it is {_kind(lst.st_mode)}",
            filename=text,
            notes=["only regular files and new names are written; name a file"],
        )
    parent = p.parent
    if not parent.exists():
        if not make_parents:
            raise OutputError(f"cannot write the {what}: the folder {str(parent)!r} does not exist", filename=text)
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(
                f"cannot create the folder {str(parent)!r} for the {what}: {e.strerror}", filename=text
            ) from None
    elif not parent.is_dir():
        raise OutputError(f"cannot write the {what}: {str(parent)!r} is not a folder", filename=text)
    return p


def check_output_format(path: str | os.PathLike, formats: Iterable[str], what: str = "output") -> str:
    """The lower-case suffix of ``path`` (``".png"``), which must be one of ``formats``.

    Raises:
        OutputError: any other suffix (or none); the message lists the accepted ones.
    """
    allowed = [f.lower() for f in formats]
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix not in allowed:
        got = f"{suffix!r}" if suffix else "no suffix"
        raise OutputError(
            f"cannot write the {what}: unknown format ({got}); use one of {', '.join(allowed)}",
            filename=os.fspath(path),
        )
    return suffix


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder (makes a rename in it durable); silently skipped where folders cannot be."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without O_RDONLY on folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that cannot fsync folders
        pass
    finally:
        os.close(fd)


def _mode_for(target: Path) -> int:
    """The permission bits of the file being replaced, or 0o666 less the umask for a new name
    (``mkstemp`` makes 0o600 files, which would hide every output from other users)."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | os.PathLike, write: Callable[[Any], None], make_parents: bool = False, what: str = "output"
) -> Path:
    """Write ``path`` through ``write(fileobj)`` (binary) into a temp file, fsync, then ``os.replace``.

    The target is checked by :func:`check_output_path` first and again just before the rename.
    Returns the path written (a symlink's target).

    Raises:
        OutputError: the target is refused, or the file system fails (full disk, no permission).
        Exceptions of ``write`` pass through; the temp file is removed either way.
    """
    target = check_output_path(path, make_parents=make_parents, what=what)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    except OSError as e:
        raise OutputError(f"cannot write the {what}: {e.strerror}", filename=os.fspath(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), _mode_for(target))
            os.fsync(f.fileno())
        check_output_path(target, what=what)  # nothing special slipped in meanwhile
        os.replace(tmp, target)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, FlowDSLError):
            raise OutputError(f"cannot write the {what}: {e.strerror or e}", filename=os.fspath(path)) from None
        raise
    fsync_dir(target.parent)
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes, make_parents: bool = False, what: str = "output") -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda f: f.write(data), make_parents=make_parents, what=what)


def atomic_write_text(path: str | os.PathLike, text: str, make_parents: bool = False, what: str = "output") -> Path:
    """:func:`atomic_write` of ``text`` in UTF-8."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), make_parents=make_parents, what=what)
