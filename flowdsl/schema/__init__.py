"""Validated spec models (pydantic v2): what a spec file means once blocks and repeats are expanded.

``FlowSpec`` is what :func:`flowdsl.parse` returns. Every model is frozen and forbids unknown
fields; ``FlowSpec.model_json_schema()`` gives the JSON schema. Source locations (``Loc``) are
kept on every statement so later passes can point at the line that caused a problem.
"""
from __future__ import annotations

import hashlib
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

__all__ = [
    "SpecModel",
    "Loc",
    "InputSpec",
    "LayerSpec",
    "PriorSpec",
    "ObjectiveSpec",
    "TrainSpec",
    "FlowSpec",
]


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Loc(SpecModel):
    """A source location (1-based line and column; 0 when unknown)."""

    line: int = 0
    column: int = 0
    end_line: int = 0
    end_column: int = 0


class InputSpec(SpecModel):
    """``input image(channels, height, width, levels)`` or ``input vector(dim)``."""

    kind: Literal["image", "vector"]
    channels: Optional[int] = Field(default=None, ge=1)
    height: Optional[int] = Field(default=None, ge=1)
    width: Optional[int] = Field(default=None, ge=1)
    dim: Optional[int] = Field(default=None, ge=1)
    levels: Optional[int] = Field(default=None, ge=2)
    loc: Loc = Loc()

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


class LayerSpec(SpecModel):
    """One bijector instance after expansion.

    ``id`` is stable and derived from the spec path (``"repeat0.1.step.coupling"``); ``args``
    holds the validated arguments with defaults filled in; ``arg_locs`` where each argument was
    written; ``bodies`` the expanded statements of each body instance of composite kinds
    (keyed by the body name as written, e.g. ``"decimator"``; instances are made per level by
    the graph builder).
    """

    id: str
    kind: str
    args: dict[str, Any] = Field(default_factory=dict)
    loc: Loc = Loc()
    arg_locs: dict[str, Loc] = Field(default_factory=dict)
    bodies: dict[str, list["LayerSpec"]] = Field(default_factory=dict)
    body_locs: dict[str, Loc] = Field(default_factory=dict)
    via: tuple[str, ...] = ()  # block calls this layer was inlined through, outermost first


class PriorSpec(SpecModel):
    name: str = "gaussian"
    args: dict[str, Any] = Field(default_factory=dict)
    loc: Loc = Loc()
    arg_locs: dict[str, Loc] = Field(default_factory=dict)


class ObjectiveSpec(SpecModel):
    name: str = "mle"
    args: dict[str, Any] = Field(default_factory=dict)
    loc: Loc = Loc()
    arg_locs: dict[str, Loc] = Field(default_factory=dict)


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
    loc: Loc = Loc()
    arg_locs: dict[str, Loc] = Field(default_factory=dict)


class FlowSpec(SpecModel):
    """A whole spec file, validated and expanded (the IR of the first pass)."""

    name: str
    filename: str = "<string>"
    source: str = ""
    input: InputSpec
    dequantize: Literal["uniform", "none"]
    layers: list[LayerSpec] = Field(default_factory=list)
    prior: PriorSpec = PriorSpec()
    objective: ObjectiveSpec = ObjectiveSpec()
    train: TrainSpec = TrainSpec()
    blocks: tuple[str, ...] = ()
    loc: Loc = Loc()

    _graph: Any = PrivateAttr(default=None)

    @property
    def sha256(self) -> str:
        """Hash of the spec text: identifies the architecture in checkpoints and ONNX metadata."""
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    @property
    def graph(self) -> Any:
        """The checked bijector graph (``FlowGraph``), built on first use."""
        if self._graph is None:
            from flowdsl.compiler.passes import build_checked_graph

            self._graph = build_checked_graph(self)
        return self._graph

    def iter_layers(self):
        """All layer specs, depth first (bodies of composite layers included)."""
        stack = list(reversed(self.layers))
        while stack:
            layer = stack.pop()
            yield layer
            for body in reversed(list(layer.bodies.values())):
                stack.extend(reversed(body))


LayerSpec.model_rebuild()
