"""Specs to models: how ``flowdsl train`` reads specs and builds flows, and :func:`load_model`.

:class:`ModelFactory` wraps ``flowdsl.parse`` / ``flowdsl.load`` / ``flowdsl.compile`` (tests
substitute a stand-in); :func:`as_spec` accepts a spec object, a path or spec text;
:func:`load_model` rebuilds a trained model from the spec text stored in its checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Optional

import torch
from torch import nn

from flowdsl.errors import CheckpointError, FlowDSLError
from flowdsl.runtime.training.checkpoint import check_spec, read_checkpoint, resolve_checkpoint_path, restore

__all__ = ["ModelFactory", "as_spec", "spec_sha256", "load_model", "check_finite_weights"]


class ModelFactory:
    """How specs are read and models built (``flowdsl.parse`` / ``flowdsl.compile``)."""

    def parse(self, text: str, filename: str = "<string>") -> Any:
        import flowdsl

        return flowdsl.parse(text, filename=filename)

    def load(self, path: str | os.PathLike) -> Any:
        import flowdsl

        return flowdsl.load(path)

    def build(self, spec: Any, seed: int) -> nn.Module:
        import flowdsl

        return flowdsl.compile(spec, seed=seed)


def as_spec(spec: Any, factory: ModelFactory) -> Any:
    """A parsed spec from a spec object, a path to a spec file, or spec text."""
    if isinstance(spec, (str, os.PathLike)):
        s = os.fspath(spec)
        if isinstance(spec, os.PathLike) or ("\n" not in s and "{" not in s):
            return factory.load(s)  # a path (a missing file is a located "cannot read" error)
        return factory.parse(s)
    return spec


def spec_sha256(spec: Any) -> str:
    """The spec's ``sha256`` attribute, or the sha256 of its source text."""
    sha = getattr(spec, "sha256", None)
    return sha if isinstance(sha, str) else hashlib.sha256(getattr(spec, "source", "").encode("utf-8")).hexdigest()


def load_model(
    ckpt_or_run: str | os.PathLike,
    spec: Any = None,
    factory: Optional[ModelFactory] = None,
    prefer: str = "best",
    device: str | torch.device | None = None,
) -> tuple[Any, nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint (or run folder) with its weights, in eval mode.

    The spec is parsed from the text stored in the checkpoint (``spec`` only checks that it
    matches). The file is read onto the CPU (``map_location="cpu"``, whatever device wrote it) and
    verified there; the model is then moved to ``device`` (a ``torch.device`` or ``--device`` text;
    None: stays on the CPU). Returns ``(spec, model, checkpoint)``.

    Raises:
        CheckpointError: unreadable, corrupt or mismatched checkpoint.
    """
    factory = factory or ModelFactory()
    path = resolve_checkpoint_path(ckpt_or_run, prefer=prefer)
    ckpt = read_checkpoint(path)
    if spec is not None:
        check_spec(ckpt, as_spec(spec, factory), str(path))
    try:
        stored = factory.parse(ckpt["spec_text"], filename=ckpt.get("spec_filename") or "<checkpoint>")
    except FlowDSLError as e:
        raise CheckpointError(
            f"the spec stored in the checkpoint no longer compiles: {e.message}", filename=str(path)
        ) from None
    seed = int((ckpt.get("config") or {}).get("seed", 0))
    model = factory.build(stored, seed)
    restore(model, ckpt)
    if device is not None:
        from flowdsl.runtime.training.device import resolve_device

        model.to(device if isinstance(device, torch.device) else resolve_device(device))
    model.eval()
    return stored, model, ckpt


def check_finite_weights(model: nn.Module, source: str | os.PathLike, use: str = "this command") -> None:
    """Refuse a model whose parameters or floating buffers hold NaN or Inf (a diverged run):
    sampling, export and evaluation would only turn them into NaN or garbage.

    Raises:
        CheckpointError: naming up to three offending tensors and their count of bad entries.
    """
    import torch

    bad = []
    for name, t in model.state_dict().items():
        if torch.is_tensor(t) and t.is_floating_point():
            k = int((~torch.isfinite(t.detach())).sum())
            if k:
                bad.append(f"{name} ({k:,} of {t.numel():,})")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(
            f"the weights hold NaN or Inf values: {', '.join(bad[:3])}{more}; they cannot be used for {use}",
            filename=os.fspath(source),
            notes=["the run diverged before this checkpoint; use an earlier checkpoint (best.pt) or retrain"],
        )
