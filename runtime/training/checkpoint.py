"""Checkpoints: written atomically, loaded without executing code, verified before use.

A checkpoint (``last.pt``, ``best.pt``) is a ``torch.save`` archive of plain containers and
tensors only, read back with ``torch.load(weights_only=True)`` (no pickled objects, no code):

    format, version        "flowdsl-checkpoint", 1
    spec_text, spec_sha256 the spec file's text and the sha256 of that text
    arch_sha256            the architecture fingerprint (:mod:`flowdsl.compiler.canonical`);
                           absent in checkpoints of flowdsl before it (they are still read)
    spec_name, spec_filename
    step                   optimizer updates done
    model                  the model's state_dict (parameters and buffers: ActNorm's
                           initialised flag, spike_slab's step counter, ...)
    optimizer              AdamW's state_dict (or None)
    rng                    {"torch": CPU generator state}
    config                 the resolved TrainConfig (dict)
    extra                  best validation score, world size, ...
    digest                 sha256 over everything above (tensors by dtype, shape and bytes)

Writing goes to a temporary file in the same folder, which is flushed, fsync'ed and renamed
over the target with ``os.replace`` (then the folder is fsync'ed), so a crash leaves either the
old or the new checkpoint, never a partial one.

Loading checks, in this order, before anything is copied into a model: the file reads as an
archive (truncation is caught here), the format tag, the digest (bit rot, edited fields), the
architecture against the spec in hand (``mismatched spec``: the sha256 of the canonical form of
the checked graph, so comments, formatting, block names and ``train(...)`` settings do not
matter; for a checkpoint without ``arch_sha256`` the fingerprint of its stored spec text is
computed, and only when that text no longer parses is the text hash compared), and every key
and shape of the model state. Any failure is a :class:`flowdsl.errors.CheckpointError`; a model or optimizer is never
left half-loaded.

``weights.safetensors`` files (written at the end of a run from the best checkpoint) hold the
model tensors plus the spec text in the safetensors metadata; they load the same way (without
optimizer state) for sampling and export.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn

from flowdsl.errors import CheckpointError, FlowDSLError, NumericalError
from flowdsl.outputs import TMP_SUFFIX

__all__ = [
    "FORMAT",
    "VERSION",
    "atomic_write",
    "save_checkpoint",
    "read_checkpoint",
    "load_checkpoint",
    "check_spec",
    "restore",
    "resolve_checkpoint_path",
    "save_safetensors",
    "digest_of",
    "first_nonfinite",
    "remove_stale_temp_files",
    "architecture_of",
    "spec_architecture",
    "TMP_SUFFIX",
]

FORMAT = "flowdsl-checkpoint"
VERSION = 1
_DIGEST_FIELDS = (
    "format",
    "version",
    "spec_text",
    "spec_sha256",
    "arch_sha256",
    "spec_name",
    "spec_filename",
    "step",
    "model",
    "optimizer",
    "rng",
    "config",
    "extra",
)
#: fields added after version 1 was fixed: digested only when present
_OPTIONAL_FIELDS = ("arch_sha256",)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    if t.numel() == 0:
        return b""
    return t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.to(torch.uint8).numpy().tobytes()


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        h.update(f"T{obj.dtype}{tuple(obj.shape)}".encode())
        h.update(_tensor_bytes(obj))
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            h.update(f"K{type(k).__name__}:{k}".encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, float):
        h.update(("F" + (repr(obj) if math.isfinite(obj) else str(obj))).encode())
    elif obj is None or isinstance(obj, (bool, int, str)):
        h.update(f"P{type(obj).__name__}:{obj}".encode())
    else:
        raise TypeError(f"checkpoints hold only tensors and plain values, not {type(obj).__name__}")


def digest_of(payload: dict[str, Any]) -> str:
    """sha256 over the checkpoint fields (not over the archive bytes, which torch may vary)."""
    h = hashlib.sha256()
    for k in _DIGEST_FIELDS:
        if k in _OPTIONAL_FIELDS and k not in payload:
            continue  # checkpoints written before the field existed keep their digest
        h.update(f"|{k}|".encode())
        _feed(h, payload.get(k))
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Write ``path`` through ``write(fileobj)`` into a temp file, fsync, then ``os.replace``;
    see :func:`flowdsl.outputs.atomic_write` (missing folders are made; a folder, device, FIFO
    or symlink to one is refused with an ``OutputError``)."""
    from flowdsl.outputs import atomic_write as _atomic_write

    _atomic_write(path, write, make_parents=True)


def remove_stale_temp_files(folder: str | os.PathLike, names: Iterable[str], older_than: float = 60.0) -> list[Path]:
    """Remove ``.<name>.<random>.tmp`` files that :func:`atomic_write` left behind for ``names``
    (a process killed mid-write) and that were last modified more than ``older_than`` seconds
    ago; other files are never touched. Returns the removed paths."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for name in names:
        for p in folder.glob(f".{glob_escape(name)}.*{TMP_SUFFIX}"):
            try:
                if p.is_file() and not p.is_symlink() and now - p.stat().st_mtime > older_than:
                    p.unlink()
                    removed.append(p)
            except OSError:
                pass
    return removed


def first_nonfinite(tree: Any, where: str = "") -> Optional[str]:
    """The path of the first tensor (or float) in ``tree`` holding NaN or ±Inf, or None."""
    if isinstance(tree, torch.Tensor):
        if tree.dtype.is_floating_point or tree.dtype.is_complex:
            if tree.numel() and not bool(torch.isfinite(tree).all()):
                return where or "tensor"
        return None
    if isinstance(tree, float):
        return None if math.isfinite(tree) else (where or "value")
    if isinstance(tree, dict):
        for k, v in tree.items():
            bad = first_nonfinite(v, f"{where}.{k}" if where else str(k))
            if bad is not None:
                return bad
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            bad = first_nonfinite(v, f"{where}[{i}]")
            if bad is not None:
                return bad
    return None


def _plain(obj: Any) -> Any:
    """Copy a state structure into plain dicts/lists (drops OrderedDict and similar types)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def save_checkpoint(
    path: str | os.PathLike,
    *,
    spec_text: str,
    spec_sha256: str,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: Optional[dict[str, Any]] = None,
    rng: Optional[dict[str, torch.Tensor]] = None,
    config: Optional[dict[str, Any]] = None,
    extra: Optional[dict[str, Any]] = None,
    spec_name: str = "",
    spec_filename: str = "",
    arch_sha256: Optional[str] = None,
) -> None:
    """Write a checkpoint atomically (see the module docstring for the fields).

    Raises:
        NumericalError: a model or optimizer tensor holds NaN/Inf (nothing is written: a
            checkpoint is always a state training can continue from).
        CheckpointError: the file could not be written (full disk, file size limit, ...); the
            previous file of that name is left as it was.
    """
    bad = first_nonfinite({"model": dict(model_state), "optimizer": optimizer_state})
    if bad is not None:
        raise NumericalError(f"not writing {Path(path).name}: {bad} holds NaN or infinite values", filename=str(path))
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "spec_text": spec_text,
        "spec_sha256": spec_sha256,
        "spec_name": spec_name,
        "spec_filename": spec_filename,
        "step": int(step),
        "model": _plain(dict(model_state)),
        "optimizer": _plain(optimizer_state) if optimizer_state is not None else None,
        "rng": _plain(rng or {}),
        "config": _plain(config or {}),
        "extra": _plain(extra or {}),
    }
    if arch_sha256 is not None:
        payload["arch_sha256"] = str(arch_sha256)
    payload["digest"] = digest_of(payload)
    _write_or_raise(path, lambda f: torch.save(payload, f))


def _write_or_raise(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """:func:`atomic_write`; a failed write (OSError, or torch's RuntimeError from its archive
    writer, e.g. under ``ulimit -f``) is a :class:`CheckpointError` naming the file."""
    from flowdsl.outputs import OutputError

    try:
        atomic_write(path, write)
    except OutputError as e:  # the writer's own message ("cannot write the output: File too large")
        reason = e.message.split(": ", 1)[-1] if e.message.startswith("cannot write") else e.message
        raise CheckpointError(f"cannot write {Path(path).name}: {reason}", filename=str(path)) from None
    except (OSError, RuntimeError) as e:
        if isinstance(e, OSError):
            reason = e.strerror or str(e)
        else:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"cannot write {Path(path).name}: {reason}", filename=str(path)) from None


def save_safetensors(
    path: str | os.PathLike,
    model_state: dict[str, torch.Tensor],
    *,
    spec_text: str,
    spec_sha256: str,
    step: int,
    spec_name: str = "",
    arch_sha256: Optional[str] = None,
) -> None:
    """Model weights (and the spec text, as metadata) in the safetensors format, atomically
    (a failed write is a :class:`CheckpointError`)."""
    from safetensors.torch import save as st_save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model_state.items()}
    meta = {
        "format": FORMAT + "-weights",
        "spec_text": spec_text,
        "spec_sha256": spec_sha256,
        "step": str(int(step)),
        "spec_name": spec_name,
    }
    if arch_sha256 is not None:
        meta["arch_sha256"] = str(arch_sha256)
    data = st_save(tensors, metadata=meta)
    _write_or_raise(path, lambda f: f.write(data))


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            model = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(
            f"cannot read safetensors weights (corrupt or truncated): {e}", filename=str(path)
        ) from None
    if meta.get("format") != FORMAT + "-weights" or "spec_text" not in meta:
        raise CheckpointError("safetensors file without flowdsl metadata (spec text and hash)", filename=str(path))
    text = meta["spec_text"]
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != meta.get("spec_sha256"):
        raise CheckpointError("safetensors metadata: the spec text does not match its hash", filename=str(path))
    try:
        step = int(meta.get("step", "0"))
    except ValueError:
        raise CheckpointError("safetensors metadata: bad step", filename=str(path)) from None
    out = {
        "format": FORMAT,
        "version": VERSION,
        "spec_text": text,
        "spec_sha256": meta["spec_sha256"],
        "spec_name": meta.get("spec_name", ""),
        "spec_filename": "",
        "step": step,
        "model": model,
        "optimizer": None,
        "rng": {},
        "config": {},
        "extra": {},
    }
    if meta.get("arch_sha256"):
        out["arch_sha256"] = meta["arch_sha256"]
    return out


def resolve_checkpoint_path(path: str | os.PathLike, prefer: str = "best") -> Path:
    """A checkpoint file, or the preferred checkpoint of a run folder (best → last → weights)."""
    p = Path(path)
    if p.is_dir():
        order = (
            ["best.pt", "last.pt", "weights.safetensors"]
            if prefer == "best"
            else ["last.pt", "best.pt", "weights.safetensors"]
        )
        for name in order:
            if (p / name).is_file():
                return p / name
        raise CheckpointError(
            "run folder holds no checkpoint (best.pt, last.pt or weights.safetensors)", filename=str(p)
        )
    if not p.is_file():
        raise CheckpointError("no such checkpoint file or run folder", filename=str(p))
    return p


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and verify a checkpoint file (format, digest); nothing is applied anywhere."""
    p = resolve_checkpoint_path(path)
    if p.suffix == ".safetensors":
        return _read_safetensors(p)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated archives, foreign pickles, unreadable files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        msg = msg.split(". ")[0].rstrip(".")  # torch appends paragraphs of advice
        raise CheckpointError(
            f"cannot read checkpoint (corrupt, truncated or not a flowdsl checkpoint): {msg}", filename=str(p)
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError("not a flowdsl checkpoint (format tag missing)", filename=str(p))
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint format version {payload.get('version')!r}; this flowdsl reads version {VERSION}",
            filename=str(p),
        )
    try:
        ok = payload.get("digest") == digest_of(payload)
    except TypeError as e:
        raise CheckpointError(f"checkpoint holds unexpected objects: {e}", filename=str(p)) from None
    if not ok:
        raise CheckpointError("checkpoint is corrupt: its contents do not match the stored digest", filename=str(p))
    text = payload.get("spec_text")
    if not isinstance(text, str) or hashlib.sha256(text.encode("utf-8")).hexdigest() != payload.get("spec_sha256"):
        raise CheckpointError("checkpoint is corrupt: the spec text does not match its hash", filename=str(p))
    payload["path"] = str(p)
    return payload


def spec_architecture(spec: Any) -> Optional[str]:
    """The architecture fingerprint of a parsed spec (None for stand-ins without a graph)."""
    from flowdsl.compiler.canonical import architecture_sha256

    try:
        return architecture_sha256(spec)
    except TypeError:
        return None


_ARCH_OF_TEXT: dict[str, Optional[str]] = {}


def architecture_of(ckpt: dict[str, Any]) -> Optional[str]:
    """The checkpoint's architecture fingerprint: its ``arch_sha256``, or (checkpoints written
    before the field existed) that of its stored spec text; None when that text no longer parses."""
    arch = ckpt.get("arch_sha256")
    if isinstance(arch, str) and arch:
        return arch
    text = ckpt.get("spec_text")
    if not isinstance(text, str):
        return None
    key = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if key not in _ARCH_OF_TEXT:
        import flowdsl

        try:
            _ARCH_OF_TEXT[key] = spec_architecture(flowdsl.parse(text))
        except FlowDSLError:
            _ARCH_OF_TEXT[key] = None
    return _ARCH_OF_TEXT[key]


def check_spec(ckpt: dict[str, Any], spec: Any, path: str = "") -> None:
    """Raise :class:`CheckpointError` unless ``ckpt`` was written for the architecture of ``spec``.

    The architecture fingerprints are compared (:mod:`flowdsl.compiler.canonical`: comments,
    formatting, block names and ``train(...)`` settings do not change it); only where one side
    has none (a stored spec text that no longer parses, a stand-in spec) the text hashes are."""
    text_hash = getattr(spec, "sha256", None) or hashlib.sha256(getattr(spec, "source", "").encode("utf-8")).hexdigest()
    ours = spec_architecture(spec)
    theirs = architecture_of(ckpt) if ours is not None else None
    if ours is not None and theirs is not None:
        if ours == theirs:
            return
        what, mine, other = "architecture", ours, theirs
    else:
        if ckpt["spec_sha256"] == text_hash:
            return
        what, mine, other = "spec text", text_hash, ckpt["spec_sha256"]
    theirs_name = ckpt.get("spec_name") or "?"
    ours_name = getattr(spec, "name", "?")
    raise CheckpointError(
        f"checkpoint belongs to another spec: it was written for {theirs_name!r} "
        f"({what} sha256 {other[:12]}…), "
        f"this spec is {ours_name!r} ({what} sha256 {mine[:12]}…)",
        filename=path or ckpt.get("path", "<checkpoint>"),
        notes=(
            "comments, formatting, block names and train(...) settings do not matter; layers, their "
            "arguments and shapes, the input and the prior do",
            "the checkpoint keeps its own spec text: `flowdsl sample CKPT` needs no spec file",
        ),
    )


def load_checkpoint(path: str | os.PathLike, spec: Any = None) -> dict[str, Any]:
    """Read and verify a checkpoint; with ``spec``, also check that it belongs to that spec."""
    ckpt = read_checkpoint(path)
    if spec is not None:
        check_spec(ckpt, spec, ckpt["path"])
    return ckpt


def _check_state(model: nn.Module, state: dict[str, Any], where: str) -> None:
    own = model.state_dict()
    if not isinstance(state, dict):
        raise CheckpointError("checkpoint model state is not a mapping", filename=where)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad = [
        f"{k}: checkpoint {tuple(state[k].shape)} {state[k].dtype}, model {tuple(v.shape)} {v.dtype}"
        for k, v in own.items()
        if k in state
        and (
            not isinstance(state[k], torch.Tensor)
            or state[k].shape != v.shape
            or state[k].dtype.is_floating_point != v.dtype.is_floating_point
        )
    ]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if bad:
            parts.append(f"{len(bad)} of another shape (e.g. {'; '.join(bad[:2])})")
        raise CheckpointError("checkpoint does not fit the model: " + ", ".join(parts), filename=where)


def restore(model: nn.Module, ckpt: dict[str, Any], optimizer: Optional[torch.optim.Optimizer] = None) -> None:
    """Copy the checkpoint's model (and optimizer) state in, all or nothing."""
    where = ckpt.get("path", "<checkpoint>")
    _check_state(model, ckpt["model"], where)
    if optimizer is not None:
        st = ckpt.get("optimizer")
        if not isinstance(st, dict) or "param_groups" not in st or "state" not in st:
            raise CheckpointError("checkpoint has no optimizer state to resume from", filename=where)
        groups = optimizer.param_groups
        if len(st["param_groups"]) != len(groups) or any(
            len(g["params"]) != len(s["params"]) for g, s in zip(groups, st["param_groups"])
        ):
            raise CheckpointError(
                "checkpoint optimizer state does not fit the model's parameter groups", filename=where
            )
    backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
    backup_opt = _plain(optimizer.state_dict()) if optimizer is not None else None
    try:
        model.load_state_dict(ckpt["model"], strict=True)
        if optimizer is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
    except Exception as e:
        model.load_state_dict(backup, strict=True)
        if optimizer is not None and backup_opt is not None:
            optimizer.load_state_dict(backup_opt)
        raise CheckpointError(f"checkpoint state could not be applied: {e}", filename=where) from None
