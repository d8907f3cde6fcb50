"""The kind registry: one entry per layer kind, prior and objective (the language side only).

A *kind* is the static definition of a bijector type: its argument model (pydantic), its shape
rule, its checks, its parameter-count formula and its activation-size estimate. Kinds live one
per file in ``flowdsl.compiler.kinds``, which imports each of them explicitly; the module that
lowers a kind to PyTorch is registered by the runtime (``flowdsl.runtime.layers.lowering``), so
this package imports neither torch nor anything under ``flowdsl.runtime``. The lookups here see
what has been registered: import ``flowdsl.compiler.kinds`` (which re-exports them) to have the
built-in kinds.

Implementing a layer kind (checklist):
    * subclass :class:`LayerKind`, set ``name`` and ``Args`` (a :class:`ArgsModel` whose fields
      have the language defaults; enumerations as ``Literal[...]``);
    * override :meth:`LayerKind.infer_shape` (raise through ``ctx.fail(message, arg=...)``);
    * set ``spatial = True`` if the layer needs a (C, H, W) input;
    * override :meth:`LayerKind.param_count` (trainable parameters of the lowered module; a test
      compares it with the module on randomised arguments) and, when the layer keeps more than
      its input for the backward pass, :meth:`LayerKind.activation_numel`;
    * to read the flow's context (conditional flows), declare ``context: Optional[bool] = None``
      in ``Args``: the compiler resolves it to a bool (whether the file declares a context) with
      no change to the passes, and lists the node in ``FlowGraph.context_nodes``; the kind checks
      the context it sees as ``ctx.context`` and counts the extra inputs in its ``param_count``
      (:mod:`flowdsl.compiler.context`), and its lowering is called with ``context=...``;
    * decorate the class with ``@register_layer`` and import its module in
      ``flowdsl/compiler/kinds/__init__.py``; register the runtime module with
      ``@lowering("name")`` in ``flowdsl/runtime/layers/`` and import it in that package's
      ``__init__.py``.

Priors pair a :class:`PriorKind` with ``@prior_lowering`` (``flowdsl.runtime.priors``), objectives
an :class:`ObjectiveKind` with ``@objective_runtime`` (``flowdsl.runtime.objectives``). Kinds
registered at run time (tests, plugins) are removed with ``unregister_layer`` /
``unregister_prior`` / ``unregister_objective``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Shape",
    "ArgsModel",
    "CheckContext",
    "BodyInstance",
    "LayerKind",
    "PriorKind",
    "ObjectiveKind",
    "register_layer",
    "register_prior",
    "register_objective",
    "unregister_layer",
    "unregister_prior",
    "unregister_objective",
    "layer_kinds",
    "prior_kinds",
    "objective_kinds",
    "get_layer",
    "get_prior",
    "get_objective",
]

Shape = tuple[int, ...]


class ArgsModel(BaseModel):
    """Base of every argument model: frozen, no unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


class CheckContext:
    """What a kind sees while it is checked: a way to fail (or warn) at a located argument.

    ``fail(message, arg=None)`` raises a located ``CheckError`` pointing at the argument ``arg``
    when it was written in the file, else at the layer itself. The context is created by the
    compiler (``flowdsl.compiler.passes``), which knows the spans.

    ``context`` is the flow's declared context (a ``flowdsl.schema.ContextSpec``), None when the
    file declares none: a kind that reads it (``args.context``) checks that it fits.
    ``context_size`` is the (height, width) to which an image context is resized for this layer:
    None for a layer of the main chain (its own height and width), the composite layer's for a
    layer inside a body (``rg`` resizes the context to its image, then cuts it into the patches
    its bodies act on).
    """

    def __init__(
        self,
        fail: Callable[..., Any],
        warn: Callable[..., Any] | None = None,
        layer_id: str = "",
        context: Any = None,
        context_size: tuple[int, int] | None = None,
    ) -> None:
        self._fail = fail
        self._warn = warn
        self.layer_id = layer_id
        self.context = context
        self.context_size = context_size

    def fail(self, message: str, arg: str | None = None) -> None:
        self._fail(message, arg)
        raise AssertionError("CheckContext.fail must raise")  # pragma: no cover

    def warn(self, message: str, arg: str | None = None) -> None:
        if self._warn is not None:
            self._warn(message, arg)


@dataclass(frozen=True)
class BodyInstance:
    """One instance of a nested body of a composite kind (e.g. RG-Flow's per-level decimator).

    ``body`` names the part as written in the file (``"decimator"``); ``label`` identifies this
    instance (``"level0.decimator"``); ``shape`` is the shape the body's layers act on.
    """

    body: str
    label: str
    shape: Shape


class LayerKind:
    """Static definition of a bijector kind (class-level; never instantiated).

    Class attributes:
        name: the layer name used in spec files.
        Args: the argument model; its field defaults are the language defaults.
        spatial: needs an image-shaped input (C, H, W); rejected on vectors with a location.
        factor_out: the layer emits part of its input as latents (``split``).
        bodies: names of nested statement blocks (``("disentangler", "decimator")`` for ``rg``).
        constant_logdet: log|det J| does not depend on the input (weight-only).
        moves_positions: the layer only rearranges entries (squeeze, split); the latent layout
            in ``z`` follows it.
    """

    name: ClassVar[str] = ""
    Args: ClassVar[type[ArgsModel]] = ArgsModel
    spatial: ClassVar[bool] = False
    factor_out: ClassVar[bool] = False
    bodies: ClassVar[tuple[str, ...]] = ()
    constant_logdet: ClassVar[bool] = False
    moves_positions: ClassVar[bool] = False
    description: ClassVar[str] = ""

    @classmethod
    def infer_shape(cls, args: Any, shape: Shape, ctx: CheckContext) -> Shape:
        """Output shape for an input of ``shape`` (without batch). Default: unchanged."""
        return shape

    @classmethod
    def latent_shape(cls, args: Any, shape: Shape, ctx: CheckContext) -> Shape | None:
        """For ``factor_out`` kinds: the shape of the latents that leave the chain."""
        return None

    @classmethod
    def body_instances(cls, args: Any, shape: Shape, ctx: CheckContext) -> list[BodyInstance]:
        """For composite kinds: the body instances to build, each with the shape it acts on."""
        return []

    @classmethod
    def shown_args(cls, args: Any, shape: Shape) -> dict[str, Any]:
        """The arguments as displayed (``flowdsl check``'s table) for input ``shape``: defaults
        that depend on the input (``coupling(net=...)``) are shown resolved. Default: as written."""
        return args.model_dump()

    @classmethod
    def param_count(cls, args: Any, shape: Shape) -> int:
        """Trainable parameters of the lowered module for input ``shape`` (bodies of composite
        kinds are separate nodes and count for themselves). Default: none."""
        return 0

    @classmethod
    def activation_numel(cls, args: Any, shape: Shape) -> int:
        """Entries per sample kept for the backward pass (the resource check's estimate).
        Default: the input."""
        return math.prod(shape)


class PriorKind:
    """Static definition of a base distribution (the runtime lowers it with ``prior_lowering``).

    A prior kind is conditional on the flow's context when its ``Args`` has ``conditional: bool =
    False`` and a file sets it true; its parameters are then :meth:`conditional_param_count`.
    """

    name: ClassVar[str] = ""
    Args: ClassVar[type[ArgsModel]] = ArgsModel

    @classmethod
    def check(cls, args: Any, shape: Shape, ctx: CheckContext) -> None:
        return None

    @classmethod
    def param_count(cls, args: Any, shape: Shape) -> int:
        """Trainable parameters of the prior for latents of ``shape``. Default: none."""
        return 0

    @classmethod
    def conditional_param_count(cls, args: Any, shape: Shape, context: Any) -> int:
        """Trainable parameters of the prior with ``conditional=true`` given the flow's context
        (a ``ContextSpec``). Default: a context-dependent mean and log-scale per latent entry
        (``flowdsl.compiler.context.conditional_prior_param_count``)."""
        from flowdsl.compiler.context import conditional_prior_param_count

        return conditional_prior_param_count(context, math.prod(shape))


class ObjectiveKind:
    """Static definition of a training objective.

    ``supports_context``: the objective trains conditional flows (a file with a ``context``); a file
    that declares a context with an objective that does not is rejected at the objective.
    """

    name: ClassVar[str] = ""
    Args: ClassVar[type[ArgsModel]] = ArgsModel
    needs_layers: ClassVar[bool] = True
    supports_context: ClassVar[bool] = False

    @classmethod
    def check(cls, args: Any, spec: Any, ctx: CheckContext) -> None:
        """Check that the file meets the objective's needs (``spec`` is the FlowSpec)."""
        return None


_LAYERS: dict[str, type[LayerKind]] = {}
_PRIORS: dict[str, type[PriorKind]] = {}
_OBJECTIVES: dict[str, type[ObjectiveKind]] = {}


def _register(table: dict, cls: type) -> type:
    name = getattr(cls, "name", "")
    if not name or not name.isidentifier():
        raise ValueError(f"kind {cls!r} needs a valid identifier as name, got {name!r}")
    prev = table.get(name)
    if prev is not None and (prev.__module__, prev.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"kind {name!r} registered twice: {prev.__module__} and {cls.__module__}")
    table[name] = cls
    return cls


def register_layer(cls: type[LayerKind]) -> type[LayerKind]:
    """Class decorator: register a layer kind under ``cls.name``."""
    return _register(_LAYERS, cls)


def register_prior(cls: type[PriorKind]) -> type[PriorKind]:
    return _register(_PRIORS, cls)


def register_objective(cls: type[ObjectiveKind]) -> type[ObjectiveKind]:
    return _register(_OBJECTIVES, cls)


def unregister_layer(name: str) -> None:
    """Remove layer kind ``name`` (no error when there is none): for kinds registered at run time."""
    _LAYERS.pop(name, None)


def unregister_prior(name: str) -> None:
    _PRIORS.pop(name, None)


def unregister_objective(name: str) -> None:
    _OBJECTIVES.pop(name, None)


def layer_kinds() -> dict[str, type[LayerKind]]:
    return dict(_LAYERS)


def prior_kinds() -> dict[str, type[PriorKind]]:
    return dict(_PRIORS)


def objective_kinds() -> dict[str, type[ObjectiveKind]]:
    return dict(_OBJECTIVES)


def get_layer(name: str) -> type[LayerKind] | None:
    return _LAYERS.get(name)


def get_prior(name: str) -> type[PriorKind] | None:
    return _PRIORS.get(name)


def get_objective(name: str) -> type[ObjectiveKind] | None:
    return _OBJECTIVES.get(name)
