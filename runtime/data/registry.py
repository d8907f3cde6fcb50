"""The data-source registry: one table of every name ``--data`` accepts and every file format it reads.

    @register_dataset("digits", kind="image", description="scikit-learn's 8×8 digits (1×8×8, 17 levels)")
    def load(req: DataRequest) -> Dataset: ...

A *named* source answers to its name (and ``aliases``), case-insensitively. A *format* reads a
file or folder given by path: it sets ``folder`` (a predicate over an existing directory) or
``suffixes`` (file suffixes such as ``(".npy", ".npz")``); its name is only shown in listings, and
the description of a folder format says what the folder holds (up to `` (``: the messages'
"folder holds neither X nor Y"). Formats are tried in registration order (the import order of
``flowdsl.runtime.data``), the first that reads the path loads it.
The loader gets a :class:`DataRequest` and returns a :class:`~flowdsl.runtime.data.base.Dataset`
(raise :class:`flowdsl.errors.DataError` for anything the user can fix).

:func:`flowdsl.runtime.data.load_dataset` looks names and formats up here; its error messages
(did-you-mean over the known names), the ``--data`` help of ``flowdsl train`` and the table in
``runtime/data/README.md`` (a test checks it against :func:`markdown_table`) come from this
table. The built-in sources register when ``flowdsl.runtime.data`` imports their modules
(explicitly, in its ``__init__``); registering the same function again is a no-op, another
function under a taken name is an error, and :func:`unregister_dataset` removes an entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from flowdsl.runtime.data.base import Dataset

__all__ = [
    "DataRequest",
    "DataSource",
    "register_dataset",
    "unregister_dataset",
    "find_dataset",
    "data_sources",
    "dataset_names",
    "data_formats",
    "describe_sources",
    "markdown_table",
]

KINDS = ("image", "vector", "any")


@dataclass(frozen=True)
class DataRequest:
    """What a loader is asked for.

    Attributes:
        name: the name as asked for (an alias stays an alias), or the path as written.
        shape: the spec's input shape, (C, H, W) or (D,).
        levels: the spec's quantisation levels for images; None for vectors.
        split: ``"train"`` or ``"test"``.
        seed: seed of generated data (fixed data sets ignore it).
        n: number of examples of generated data (None: the source's default).
        path: formats only: the existing file or folder to read.
    """

    name: str
    shape: tuple[int, ...]
    levels: Optional[int]
    split: str = "train"
    seed: int = 0
    n: Optional[int] = None
    path: Optional[Path] = None


@dataclass(frozen=True)
class DataSource:
    """One entry of the table (see the module docstring)."""

    name: str
    load: Callable[[DataRequest], "Dataset"]
    description: str
    kind: str
    aliases: tuple[str, ...] = ()
    folder: Optional[Callable[[Path], bool]] = None
    suffixes: tuple[str, ...] = ()
    module: str = field(default="", compare=False)

    @property
    def is_format(self) -> bool:
        return self.folder is not None or bool(self.suffixes)

    def reads(self, path: Path) -> bool:
        """Formats: whether this one reads the existing ``path``."""
        if path.is_dir():
            return self.folder is not None and bool(self.folder(path))
        return path.suffix.lower() in self.suffixes

    def label(self) -> str:
        """How listings show the entry: the name, or what a format reads."""
        if not self.is_format:
            return self.name
        return "/".join(f"FILE{s}" for s in self.suffixes) if self.suffixes else "DIR"


_SOURCES: dict[str, DataSource] = {}


def _key(name: str) -> str:
    return str(name).strip().lower()


def register_dataset(
    name: str,
    *,
    description: str,
    kind: str,
    aliases: tuple[str, ...] | list[str] = (),
    folder: Optional[Callable[[Path], bool]] = None,
    suffixes: tuple[str, ...] | list[str] = (),
) -> Callable[[Callable[[DataRequest], Any]], Callable[[DataRequest], Any]]:
    """Decorator: register ``fn(req: DataRequest) -> Dataset`` as data source ``name``.

    Args:
        name: what ``--data`` / ``train(data=...)`` writes (case-insensitive); for formats, a label.
        description: one line for listings and messages.
        kind: ``"image"``, ``"vector"`` or ``"any"`` (formats that read both).
        aliases: other names of the same source.
        folder: makes the entry a format for folders: ``folder(path)`` says whether it reads ``path``.
        suffixes: makes the entry a format for files with these suffixes (``".npz"``).
    """
    key = _key(name)
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"data source name must be a non-empty word, got {name!r}")
    if kind not in KINDS:
        raise ValueError(f"data source {name!r}: kind must be one of {KINDS}, got {kind!r}")
    alias_keys = tuple(_key(a) for a in aliases)
    sfx = tuple(s.lower() if s.startswith(".") else f".{s.lower()}" for s in suffixes)

    def register(fn: Callable[[DataRequest], Any]) -> Callable[[DataRequest], Any]:
        src = DataSource(key, fn, description, kind, alias_keys, folder, sfx, getattr(fn, "__module__", ""))
        for k in (key, *alias_keys):
            prev = _owner(k)
            if prev is not None and _where(prev.load) != _where(fn):
                raise ValueError(f"data source {k!r} registered twice: {prev.module} and {src.module}")
        _SOURCES[key] = src
        return fn

    return register


def _where(fn: Callable[..., Any]) -> tuple[str, str]:
    """Identifies a loader across re-imports of its file (also as ``__main__``): registering it
    again is a no-op."""
    code = getattr(fn, "__code__", None)
    where = code.co_filename if code is not None else getattr(fn, "__module__", "")
    return where, getattr(fn, "__qualname__", repr(fn))


def _owner(key: str) -> Optional[DataSource]:
    """The entry that answers to ``key`` (its name or an alias), formats included."""
    if key in _SOURCES:
        return _SOURCES[key]
    return next((s for s in _SOURCES.values() if key in s.aliases), None)


def unregister_dataset(name: str) -> None:
    """Remove the entry ``name`` (no error when there is none)."""
    _SOURCES.pop(_key(name), None)


def find_dataset(name: str) -> Optional[DataSource]:
    """The named source (not a format) that answers to ``name`` or one of its aliases, or None."""
    src = _owner(_key(name))
    return None if src is None or src.is_format else src


def data_sources() -> list[DataSource]:
    """Every entry in registration order."""
    return list(_SOURCES.values())


def dataset_names(aliases: bool = True) -> tuple[str, ...]:
    """The names ``--data`` accepts (with their aliases unless told otherwise)."""
    out: list[str] = []
    for s in _SOURCES.values():
        if not s.is_format:
            out += [s.name, *(s.aliases if aliases else ())]
    return tuple(out)


def data_formats() -> list[DataSource]:
    """The entries that read a file or folder given by path, in registration order."""
    return [s for s in _SOURCES.values() if s.is_format]


def _aka(s: DataSource) -> str:
    return f" (also {', '.join(s.aliases)})" if s.aliases else ""


def describe_sources() -> str:
    """The table as plain text (``flowdsl train --help``)."""
    named = [s for s in _SOURCES.values() if not s.is_format]
    width = max([len(s.label()) for s in _SOURCES.values()] + [4])
    lines = ["data sets (--data NAME):"]
    lines += [f"  {s.name:<{width}}  {s.kind:<6}  {s.description}{_aka(s)}" for s in named]
    lines += ["or a path (--data PATH; relative to the current folder, then the spec's):"]
    lines += [f"  {s.label():<{width}}  {s.kind:<6}  {s.description}" for s in data_formats()]
    return "\n".join(lines)


def markdown_table() -> str:
    """The table as Markdown (``runtime/data/README.md`` holds it verbatim)."""
    rows = ["| `--data` | kind | what | registered in |", "|---|---|---|---|"]
    for s in sorted(_SOURCES.values(), key=lambda s: s.is_format):  # names first, then formats (in order)
        names = f"`{s.label()}`" + "".join(f", `{a}`" for a in s.aliases)
        module = s.module.rsplit(".", 1)[-1] + ".py" if s.module else ""
        rows.append(f"| {names} | {s.kind} | {s.description} | `{module}` |")
    return "\n".join(rows)
