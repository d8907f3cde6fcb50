"""Validated spec models (pydantic v2): what a spec file means once blocks and repeats are expanded.

``FlowSpec`` is what :func:`flowdsl.parse` returns. Every model is frozen and forbids unknown
fields. Source locations (:class:`flowdsl.errors.Span`, the one location type) are kept on every
statement so later passes can point at the line that caused a problem. Arguments are held as the
kind's validated ``Args`` model (validated once, by the ``expand`` pass).

``flowdsl.parse`` returns the FlowSpec of the checked pipeline with ``graph`` set to its checked
``FlowGraph``; the pipeline sets it once (``with_graph``) and nothing recomputes it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from flowdsl.errors import Span

__all__ = [
    "SpecModel",
    "InputSpec",
    "ContextSpec",
    "LayerSpec",
    "PriorSpec",
    "ObjectiveSpec",
    "TrainSpec",
    "FlowSpec",
]


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(SpecModel):
    """``input image(channels, height, width, levels)`` or ``input vector(dim)``."""

    kind: Literal["image", "vector"]
    channels: Optional[int] = Field(default=None, ge=1)
    height: Optional[int] = Field(default=None, ge=1)
    width: Optional[int] = Field(default=None, ge=1)
    dim: Optional[int] = Field(default=None, ge=1)
    levels: Optional[int] = Field(default=None, ge=2)
    span: Span = Span()

    @property
    def shape(self) -> tuple[int, ...]:
        if self.kind == "image":
            return (int(self.channels), int(self.height), int(self.width))  # type: ignore[arg-type]
        return (int(self.dim),)  # type: ignore[arg-type]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class ContextSpec(SpecModel):
    """``context label(classes=K)``, ``context vector(dim=D)`` or ``context image(channels=C,
    height=H, width=W)``: what every example is conditioned on (conditional flows).

    ``shape`` is one example's context without the batch: label ``()`` (an integer class in
    0…K−1), vector ``(D,)``, image ``(C, H, W)``. ``span`` is the statement's, ``arg_spans`` where
    each argument's value was written.
    """

    kind: Literal["label", "vector", "image"]
    classes: Optional[int] = Field(default=None, ge=1)
    dim: Optional[int] = Field(default=None, ge=1)
    channels: Optional[int] = Field(default=None, ge=1)
    height: Optional[int] = Field(default=None, ge=1)
    width: Optional[int] = Field(default=None, ge=1)
    span: Span = Span()
    arg_spans: dict[str, Span] = Field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        if self.kind == "label":
            return ()
        if self.kind == "vector":
            return (int(self.dim),)  # type: ignore[arg-type]
        return (int(self.channels), int(self.height), int(self.width))  # type: ignore[arg-type]

    def describe(self) -> str:
        """As written in a spec file: ``label(classes=10)``, ``image(channels=1, height=4, width=4)``."""
        names = {"label": ("classes",), "vector": ("dim",), "image": ("channels", "height", "width")}[self.kind]
        return f"{self.kind}(" + ", ".join(f"{n}={getattr(self, n)}" for n in names) + ")"


class LayerSpec(SpecModel):
    """One bijector instance after expansion.

    ``id`` is stable and derived from the spec path (``"repeat0.1.step.coupling"``); ``args``
    holds the kind's validated Args model (defaults filled in); ``arg_spans`` where each argument was
    written; ``bodies`` the expanded statements of each body instance of composite kinds
    (keyed by the body name as written, e.g. ``"decimator"``; instances are made per level by
    the graph builder).
    """

    id: str
    kind: str
    args: Any = None
    span: Span = Span()
    arg_spans: dict[str, Span] = Field(default_factory=dict)
    bodies: dict[str, list["LayerSpec"]] = Field(default_factory=dict)
    body_spans: dict[str, Span] = Field(default_factory=dict)
    via: tuple[str, ...] = ()  # block calls this layer was inlined through, outermost first


class PriorSpec(SpecModel):
    """``prior NAME(...)``: ``args`` is the prior kind's validated Args model."""

    name: str = "gaussian"
    args: Any = None
    span: Span = Span()
    arg_spans: dict[str, Span] = Field(default_factory=dict)


class ObjectiveSpec(SpecModel):
    """``objective NAME(...)``: ``args`` is the objective kind's validated Args model."""

    name: str = "mle"
    args: Any = None
    span: Span = Span()
    arg_spans: dict[str, Span] = Field(default_factory=dict)


class TrainSpec(SpecModel):
    """Defaults for ``flowdsl train``; command-line flags override them."""

    data: Optional[str] = None
    batch: int = Field(default=64, ge=1, le=1_000_000)
    lr: float = Field(default=1e-3, gt=0, le=10)
    steps: int = Field(default=2000, ge=0, le=100_000_000)
    seed: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup: int = Field(default=100, ge=0)
    clip: float = Field(default=50.0, gt=0)
    eval_every: int = Field(default=200, ge=1)
    checkpoint_every: int = Field(default=200, ge=1)
    test_batch: int = Field(default=256, ge=1)
    span: Span = Span()
    arg_spans: dict[str, Span] = Field(default_factory=dict)


class FlowSpec(SpecModel):
    """A whole spec file, validated and expanded (the IR of the first pass)."""

    name: str
    filename: str = "<string>"
    source: str = ""
    input: InputSpec
    context: Optional[ContextSpec] = None
    dequantize: Literal["uniform", "none"]
    layers: list[LayerSpec] = Field(default_factory=list)
    prior: PriorSpec = PriorSpec()
    objective: ObjectiveSpec = ObjectiveSpec()
    train: TrainSpec = TrainSpec()
    blocks: tuple[str, ...] = ()
    span: Span = Span()

    graph: Any = Field(default=None, exclude=True, repr=False)

    @property
    def sha256(self) -> str:
        """Hash of the spec text: identifies the architecture in checkpoints and ONNX metadata."""
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    def with_graph(self, graph: Any) -> "FlowSpec":
        """This spec holding its checked ``FlowGraph`` (what the pipeline returns)."""
        return self.model_copy(update={"graph": graph})

    def iter_layers(self):
        """All layer specs, depth first (bodies of composite layers included)."""
        stack = list(reversed(self.layers))
        while stack:
            layer = stack.pop()
            yield layer
            for body in reversed(list(layer.bodies.values())):
                stack.extend(reversed(body))


LayerSpec.model_rebuild()
