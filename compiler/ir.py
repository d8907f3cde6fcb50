"""The bijector graph (IR): a networkx DiGraph with one node per bijector instance.

Node payloads are :class:`Node` objects stored under the single node attribute ``"node"``.
Node roles:

* ``"input"``: the data x, shape = the spec's input shape;
* ``"layer"``: a bijector instance (kind, args, in/out shape, parameter count, source location);
* ``"latent"``: latents leaving the chain — one per ``split`` and the final ``z`` of the chain.

Edges run in the forward direction x → z and carry ``port``: ``"out"`` for the main chain,
``"latent"`` for the factored-out part of a ``split``, ``"body"`` from a composite layer to the
first node of each of its body instances (whose own chain is linked by ``"out"`` edges).
``FlowGraph.chain`` lists the top-level layer ids in forward order; ``Node.body_chains`` lists
each body instance's layer ids for composite kinds.

``FlowGraph.context`` is the spec's declared context (a ``ContextSpec``, None when unconditional);
``FlowGraph.context_nodes`` lists the ids of the layer nodes that read it (their ``args.context``
is True, always a bool once ``expand`` has resolved it), in forward order, bodies included.

``Node.meta`` holds analysis results under documented keys:
    ``"latent_index"``   index of a latent node (0 = first split, ..., last = final z);
    ``"fused_from"``     ids of the nodes a fused node replaces (fusion passes);
    ``"logdet_constant"``  True when log|det J| does not depend on the input;
    ``"file_context"``   whether the file declares a context (layers; a ``context=false`` that a
                         file without one could not have made true is then not shown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import networkx as nx

from flowdsl.errors import Span

__all__ = ["Node", "FlowGraph"]


@dataclass
class Node:
    id: str
    role: str  # "input" | "layer" | "latent"
    kind: str = ""
    args: Any = None  # the validated Args model instance (layers)
    span: Span = field(default_factory=Span)
    arg_spans: dict[str, Span] = field(default_factory=dict)
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None
    latent_shape: tuple[int, ...] | None = None
    n_params: int | None = None
    parent: str | None = None  # composite layer id for body layers
    body_label: str | None = None
    body_chains: dict[str, list[str]] = field(default_factory=dict)
    via: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def args_text(self, conditional: bool | None = None) -> str:
        """The arguments as shown (``LayerKind.shown_args``); with ``conditional=False`` (a file
        without a context; None: ``meta["file_context"]``) a ``context=false`` that the file could
        not have made true is left out."""
        if conditional is None:
            conditional = bool(self.meta.get("file_context", True))
        if self.args is None:
            return ""
        data = self.args.model_dump() if hasattr(self.args, "model_dump") else dict(self.args)
        if self.role == "layer" and self.in_shape is not None and hasattr(self.args, "model_dump"):
            from flowdsl.compiler.kinds import get_layer

            kind = get_layer(self.kind)
            if kind is not None:
                data = kind.shown_args(self.args, tuple(self.in_shape))
        if not conditional and data.get("context") is False:
            data = {k: v for k, v in data.items() if k != "context"}
        return ", ".join(f"{k}={_fmt(v)}" for k, v in data.items())


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict) and "call" in v:
        inner = ", ".join(f"{k}={_fmt(x)}" for k, x in v.get("args", {}).items())
        return f"{v['call']}({inner})"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


class FlowGraph:
    """The IR shared by every pass: graph + top-level chain order + graph-level specs."""

    def __init__(self, spec: Any, warnings: list | None = None) -> None:
        self.spec = spec
        #: located warnings of the checker (``flowdsl.errors.CheckWarning``), in the order found
        self.warnings: list = warnings if warnings is not None else []
        self.g = nx.DiGraph()
        self.chain: list[str] = []
        self.latents: list[str] = []
        self.passes_run: list[str] = []

    # -- construction -------------------------------------------------------------------
    def add(self, node: Node) -> Node:
        if node.id in self.g:
            raise ValueError(f"duplicate node id {node.id!r}")
        self.g.add_node(node.id, node=node)
        return node

    def link(self, src: str, dst: str, port: str = "out") -> None:
        self.g.add_edge(src, dst, port=port)

    def node(self, node_id: str) -> Node:
        return self.g.nodes[node_id]["node"]

    # -- queries ------------------------------------------------------------------------
    def layers(self, include_bodies: bool = True) -> Iterator[Node]:
        """Layer nodes in forward order (bodies right after their composite layer)."""
        for nid in self.chain:
            yield from self._walk(nid, include_bodies)

    def _walk(self, nid: str, include_bodies: bool) -> Iterator[Node]:
        n = self.node(nid)
        yield n
        if include_bodies:
            for chain in n.body_chains.values():
                for cid in chain:
                    yield from self._walk(cid, include_bodies)

    def topo_order(self) -> list[str]:
        return list(nx.topological_sort(self.g))

    def reverse_order(self) -> list[str]:
        return list(reversed(self.topo_order()))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.spec.input.shape)

    @property
    def context(self) -> Any:
        """The declared context (``flowdsl.schema.ContextSpec``), None for an unconditional flow."""
        return getattr(self.spec, "context", None)

    @property
    def context_nodes(self) -> list[str]:
        """Ids of the layer nodes that read the context (``args.context`` is True), in forward order,
        bodies included: where the context enters the graph."""
        return [n.id for n in self.layers() if getattr(n.args, "context", None) is True]

    def prior_conditional(self) -> bool:
        """Whether the prior reads the context (its ``conditional`` argument)."""
        prior = getattr(self.spec, "prior", None)
        return bool(getattr(getattr(prior, "args", None), "conditional", False))

    def depth(self, node: Node) -> int:
        """How many composite layers enclose ``node`` (0 for the top-level chain)."""
        depth, p = 0, node.parent
        while p is not None:
            depth, p = depth + 1, self.node(p).parent
        return depth

    def total_params(self) -> int:
        """Trainable parameters of the bijectors (the prior's: :meth:`prior_params`)."""
        return sum(n.n_params or 0 for n in self.layers())

    def prior_params(self) -> int:
        """Trainable parameters of the prior for latents of the input's shape (``PriorKind.param_count``,
        e.g. 2·numel for ``gaussian(learned=true)``)."""
        prior = getattr(self.spec, "prior", None)
        if prior is None:
            return 0
        from flowdsl.compiler.kinds import get_prior

        kind = get_prior(prior.name)
        if kind is None:
            return 0
        if self.prior_conditional() and self.context is not None:
            return int(kind.conditional_param_count(prior.args, self.input_shape, self.context))
        return int(kind.param_count(prior.args, self.input_shape))

    def context_params(self) -> int:
        """Trainable parameters of the model-level context encoder (0 when unconditional;
        ``flowdsl.compiler.context.encoder_param_count``)."""
        from flowdsl.compiler.context import encoder_param_count

        return encoder_param_count(self.context)

    def model_params(self) -> int:
        """Trainable parameters of the whole compiled model: bijectors, prior and context encoder."""
        return self.total_params() + self.prior_params() + self.context_params()

    def verify(self) -> None:
        """Structural invariants: acyclic, every chain node present, shapes chain up."""
        assert nx.is_directed_acyclic_graph(self.g), "graph has a cycle"
        prev = self.input_shape
        for nid in self.chain:
            n = self.node(nid)
            if n.in_shape is not None:
                assert n.in_shape == prev, f"{nid}: in_shape {n.in_shape} != {prev}"
                prev = n.out_shape

    # -- printing -----------------------------------------------------------------------
    def format(self, with_shapes: bool = True) -> str:
        """A deterministic table: layer, kind, arguments, shape in → out, parameters, line."""
        rows = [("layer", "kind", "shape in -> out", "params", "line", "arguments")]
        for n in self.layers():
            depth = self.depth(n)
            shape = ""
            if with_shapes and n.in_shape is not None:
                shape = f"{_shape(n.in_shape)} -> {_shape(n.out_shape)}"
                if n.latent_shape is not None:
                    shape += f" + latent {_shape(n.latent_shape)}"
            label = "  " * depth + n.id
            rows.append(
                (
                    label,
                    n.kind,
                    shape,
                    "" if n.n_params is None else f"{n.n_params:,}",
                    str(n.span.line or ""),
                    n.args_text(conditional=self.context is not None),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        out = []
        for i, r in enumerate(rows):
            out.append(("  ".join(c.ljust(widths[j]) for j, c in enumerate(r[:5])) + "  " + r[5]).rstrip())
            if i == 0:
                out.append("  ".join("-" * w for w in widths) + "  " + "-" * 9)
        from flowdsl.wording import plural

        n_layers = sum(1 for _ in self.layers())
        total, prior, encoder = self.total_params(), self.prior_params(), self.context_params()
        params = plural(total + prior + encoder, "parameter")
        if encoder:
            params += f" ({total:,} in the bijectors, {prior:,} in the prior, {encoder:,} in the context encoder)"
        elif prior:
            params += f" ({total:,} in the bijectors, {prior:,} in the prior)"
        out.append("")
        out.append(
            f"input {_shape(self.input_shape)}; {plural(n_layers, 'bijector')}; "
            f"{plural(len(self.latents), 'latent output')}; {params}"
        )
        if self.context is not None:
            out.append(self.context_text())
        return "\n".join(out)

    def context_text(self) -> str:
        """Where the context enters: ``context label(classes=10), shape (): enters coupling0, ...
        and the prior``."""
        where = list(self.context_nodes)
        if len(where) > 8:
            where = where[:8] + [f"... ({len(self.context_nodes)} layers)"]
        parts = []
        if where:
            parts.append(", ".join(where))
        if self.prior_conditional():
            parts.append(f"the prior ({self.spec.prior.name})")
        enters = " and ".join(parts) if parts else "nothing"
        return f"context {self.context.describe()}, shape {_shape(self.context.shape)}; enters {enters}"


def _shape(s: tuple[int, ...] | None) -> str:
    if s is None:
        return "?"
    return "(" + ", ".join(str(d) for d in s) + ")"
