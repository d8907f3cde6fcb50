"""Pass ``fuse``: the inference rewrites of ``model.fuse()``, planned on the checked FlowGraph.

A *fusion rule* is a pattern, a check and a rewrite (one file per rule in
``flowdsl.runtime.fusion``, registered with :func:`register_rule`; this module only knows the
contract). Each rule runs as one pass over every chain of the graph — the top-level chain and
the body chain of every composite layer (``rg``) — in the order of ``FusionRule.order``:

    match(nodes, i, ctx) -> n       pattern: the rule applies to nodes[i : i+n] (0: no match)
    check(nodes, ctx) -> reason     static check on the IR; None accepts, a string explains why
                                    the rule refuses this match
    rewrite(modules, nodes, ctx)    runtime: the inference modules replacing ``modules``; may
                                    raise :class:`Refused` (e.g. a weight-dependent reason)
    fused_nodes(nodes, ctx, mods)   the IR nodes replacing ``nodes`` (``meta["fused_from"]``)

:func:`plan_fusion` runs the rules on the IR alone (no tensors; what ``flowdsl check --explain``
prints); :func:`run_fusion` runs them on (node, module) pairs, which is what ``model.fuse()``
does. Both return a :class:`PassResult` with the rewritten graph and a log of every rewrite and
refusal, so the printed plan and the built module come from the same code.

Implementing a rule (checklist):
    * subclass :class:`FusionRule`, set ``name`` (an identifier), ``summary`` and ``order``;
    * ``match`` MUST only look at ``nodes`` (kinds, args, shapes) and ``ctx``; it returns the
      length of the longest run starting at ``i`` that it wants;
    * ``check`` MUST be cheap and return a human-readable reason when refusing;
    * ``rewrite`` MUST return modules with the same forward/inverse/log-det as the ones it
      replaces (float64 ≤ 1e-12, float32 ≤ 1e-5 relative), never call ``.item()`` in their
      forward/inverse, and MAY return fewer modules (an empty list removes the run);
    * decorate the class with ``@register_rule`` and add a numerics test to tests/runtime/fusion/test_fusion.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Sequence

from flowdsl.compiler.ir import FlowGraph, Node

__all__ = [
    "FusionRule",
    "Refused",
    "ChainContext",
    "Rewrite",
    "PassResult",
    "register_rule",
    "fusion_rules",
    "plan_fusion",
    "run_fusion",
    "format_plan",
    "explain_fusion",
    "FusePass",
]


class Refused(Exception):
    """Raised by ``FusionRule.rewrite`` to decline a match; the message is the reason."""


@dataclass(frozen=True)
class ChainContext:
    """Where a chain sits: ``label`` is "" for the top-level chain, else ``node/body-label``;
    ``last_id`` is the id of the chain's last node when the rule's pass over it started."""

    graph: FlowGraph
    label: str = ""
    last_id: str = ""

    @property
    def top_level(self) -> bool:
        return self.label == ""


@dataclass
class Rewrite:
    """One log entry: ``before`` → ``after`` by ``rule`` (``refused`` set when it declined)."""

    rule: str
    chain: str
    before: tuple[str, ...]
    after: tuple[str, ...]
    detail: str = ""
    refused: str | None = None


@dataclass
class PassResult:
    """The rewritten graph, whether anything changed, the log, and node counts per rule."""

    graph: FlowGraph
    modified: bool
    log: list[Rewrite] = field(default_factory=list)
    counts: list[tuple[str, int, int]] = field(default_factory=list)  # (rule, nodes before, after)
    modules: list[Any] | None = None  # top-level inference modules (run_fusion only)


class FusionRule:
    """Base class of a fusion rule (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    order: ClassVar[int] = 100

    def match(self, nodes: Sequence[Node], i: int, ctx: ChainContext) -> int:
        return 0

    def check(self, nodes: Sequence[Node], ctx: ChainContext) -> str | None:
        return None

    def rewrite(self, modules: list[Any], nodes: Sequence[Node], ctx: ChainContext) -> list[Any]:
        raise NotImplementedError(f"fusion rule {self.name!r} has no runtime rewrite")

    def fused_nodes(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> list[Node]:
        """Default: one node of kind ``fused`` covering the run (shapes from its ends)."""
        return [fused_node(nodes, "fused", self.name)]

    def detail(self, nodes: Sequence[Node], ctx: ChainContext, modules: list[Any] | None) -> str:
        return self.summary


def fused_node(nodes: Sequence[Node], kind: str, rule: str, node_id: str | None = None, **meta: Any) -> Node:
    """A node replacing ``nodes``: in/out shapes from the ends, span of the first, ``fused_from``."""
    first, last = nodes[0], nodes[-1]
    ids = [n.id for n in nodes]
    origin: list[str] = []
    for n in nodes:
        origin.extend(n.meta.get("fused_from", [n.id]))
    return Node(
        id=node_id or "+".join(ids),
        role="layer",
        kind=kind,
        args=None,
        span=first.span,
        in_shape=first.in_shape,
        out_shape=last.out_shape,
        n_params=sum(n.n_params or 0 for n in nodes),
        parent=first.parent,
        body_label=first.body_label,
        meta={
            "fused_from": origin,
            "rule": rule,
            "logdet_constant": all(n.meta.get("logdet_constant", False) for n in nodes),
            **meta,
        },
    )


_RULES: dict[str, type[FusionRule]] = {}


def register_rule(cls: type[FusionRule]) -> type[FusionRule]:
    """Class decorator: register a fusion rule under ``cls.name`` (an identifier, unique)."""
    name = getattr(cls, "name", "")
    if not name or not name.isidentifier():
        raise ValueError(f"fusion rule {cls!r} needs a valid identifier as name, got {name!r}")
    prev = _RULES.get(name)
    if prev is not None and (prev.__module__, prev.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"fusion rule {name!r} registered twice: {prev.__module__} and {cls.__module__}")
    _RULES[name] = cls
    return cls


def fusion_rules() -> list[FusionRule]:
    """Instances of every registered rule, in application order.

    The built-in rules live in the runtime (``flowdsl.runtime.fusion.rules``), which registers
    them when imported; the compiler only knows the contract.
    """
    return [cls() for cls in sorted(_RULES.values(), key=lambda c: (c.order, c.name))]


# ----------------------------------------------------------------------------- the engine
@dataclass
class _Item:
    node: Node
    module: Any = None


def _chains(graph: FlowGraph, items: list[_Item], prefix: str = "") -> dict[str, list[_Item]]:
    """{chain label: items} for the top chain and, recursively, every body chain."""
    out = {prefix: items}
    for it in items:
        for label, ids in it.node.body_chains.items():
            try:
                bmods = _body_modules(it.module, label, len(ids))
            except Refused:  # not the labels/bodies protocol: assemble() gets bodies=None
                continue
            sub = [_Item(graph.node(c), m) for c, m in zip(ids, bmods)]
            out.update(_chains(graph, sub, f"{it.node.id}/{label}"))
    return out


def _body_modules(module: Any, label: str, n: int) -> list[Any]:
    """The modules of one body chain of a composite module (``labels`` + ``bodies`` protocol)."""
    if module is None:
        return [None] * n
    labels = list(getattr(module, "labels", []))
    if label not in labels:
        raise Refused(f"composite {type(module).__name__} has no body {label!r}")
    body = module.bodies[labels.index(label)]
    layers = list(getattr(body, "layers", []))
    if len(layers) != n:
        raise Refused(f"body {label!r} has {len(layers)} modules for {n} nodes")
    return layers


def _run_rule(
    rule: FusionRule, items: list[_Item], ctx: ChainContext, log: list[Rewrite], runtime: bool
) -> tuple[list[_Item], bool]:
    nodes = [it.node for it in items]
    out: list[_Item] = []
    modified = False
    i = 0
    while i < len(items):
        n = rule.match(nodes, i, ctx)
        if n <= 0:
            out.append(items[i])
            i += 1
            continue
        group, gnodes = items[i : i + n], nodes[i : i + n]
        before = tuple(nd.id for nd in gnodes)
        reason = rule.check(gnodes, ctx)
        mods: list[Any] | None = None
        if reason is None and runtime:
            try:
                mods = rule.rewrite([it.module for it in group], gnodes, ctx)
            except Refused as e:
                reason = str(e)
        if reason is not None:
            log.append(Rewrite(rule.name, ctx.label, before, before, refused=reason))
            out.extend(group)
            i += n
            continue
        new_nodes = rule.fused_nodes(gnodes, ctx, mods)
        if mods is not None and len(mods) != len(new_nodes):
            raise RuntimeError(f"fusion rule {rule.name!r} returned {len(mods)} modules for {len(new_nodes)} nodes")
        out.extend(_Item(nd, None if mods is None else m) for nd, m in zip(new_nodes, mods or [None] * len(new_nodes)))
        log.append(
            Rewrite(rule.name, ctx.label, before, tuple(nd.id for nd in new_nodes), rule.detail(gnodes, ctx, mods))
        )
        modified = True
        i += n
    return out, modified


def _execute(
    graph: FlowGraph,
    modules: list[Any] | None,
    assemble: Callable[[Node, Any, dict[str, list[Any]]], Any] | None,
    rules: Sequence[FusionRule] | None,
) -> PassResult:
    runtime = modules is not None
    rules = list(fusion_rules() if rules is None else rules)
    top = [_Item(graph.node(nid), None if modules is None else modules[k]) for k, nid in enumerate(graph.chain)]
    chains = _chains(graph, top)
    log: list[Rewrite] = []
    counts: list[tuple[str, int, int]] = []
    modified = False
    for rule in rules:
        n_before = sum(len(v) for v in chains.values())
        for label in list(chains):
            items = chains[label]
            ctx = ChainContext(graph, label, items[-1].node.id if items else "")
            chains[label], mod = _run_rule(rule, items, ctx, log, runtime)
            modified |= mod
        counts.append((rule.name, n_before, sum(len(v) for v in chains.values())))
    new_graph = _rebuild_graph(graph, chains)
    out_modules = None
    if runtime:
        out_modules = [_assemble_item(it, chains, "", assemble) for it in chains[""]]
    return PassResult(new_graph, modified, log, counts, out_modules)


def _assemble_item(it: _Item, chains: dict[str, list[_Item]], prefix: str, assemble) -> Any:
    if not it.node.body_chains or assemble is None:
        return it.module
    bodies: dict[str, list[Any]] | None = {}
    for label in it.node.body_chains:
        sub = chains.get(f"{it.node.id}/{label}")
        if sub is None:
            bodies = None
            break
        bodies[label] = [_assemble_item(s, chains, prefix, assemble) for s in sub]
    return assemble(it.node, it.module, bodies)


def _rebuild_graph(graph: FlowGraph, chains: dict[str, list[_Item]]) -> FlowGraph:
    """A new FlowGraph with the rewritten chains (nodes are copies; the input graph is unchanged)."""
    g = FlowGraph(graph.spec)
    g.passes_run = [*graph.passes_run, "fuse"]
    g.add(copy.copy(graph.node("x")))

    def add_chain(items: list[_Item], start: str, first_port: str) -> list[str]:
        ids, prev = [], start
        for k, it in enumerate(items):
            node = replace(it.node, meta=dict(it.node.meta))
            if node.body_chains:
                node.body_chains = {
                    label: [s.node.id for s in chains.get(f"{it.node.id}/{label}", [])] for label in node.body_chains
                }
            g.add(node)
            g.link(prev, node.id, port=first_port if k == 0 else "out")
            ids.append(node.id)
            prev = node.id
            for label in node.body_chains:
                add_chain(chains.get(f"{it.node.id}/{label}", []), node.id, "body")
        return ids

    g.chain = add_chain(chains[""], "x", "out")
    for lid in graph.latents:
        g.add(copy.copy(graph.node(lid)))
        g.latents.append(lid)
    for u, v, data in graph.g.edges(data=True):
        if data.get("port") == "latent" and u in g.g:
            g.link(u, v, port="latent")
    last = g.chain[-1] if g.chain else "x"
    g.link(last, graph.latents[-1])
    return g


def plan_fusion(graph: FlowGraph, rules: Sequence[FusionRule] | None = None) -> PassResult:
    """Run every fusion rule on the IR alone: the plan ``model.fuse()`` follows."""
    return _execute(graph, None, None, rules)


def run_fusion(
    graph: FlowGraph,
    modules: list[Any],
    assemble: Callable[[Node, Any, dict[str, list[Any]]], Any] | None = None,
    rules: Sequence[FusionRule] | None = None,
) -> PassResult:
    """Run every fusion rule on the top-level ``modules`` (aligned with ``graph.chain``).

    ``assemble(node, module, bodies)`` rebuilds a composite module from its fused body modules
    (``bodies`` is None when the module does not expose them through ``labels``/``bodies``).
    """
    if len(modules) != len(graph.chain):
        raise ValueError(f"{len(modules)} modules for a chain of {len(graph.chain)} nodes")
    return _execute(graph, modules, assemble, rules)


def format_plan(result: PassResult, show_refusals: bool = True) -> str:
    """Text for ``flowdsl check --explain``: node counts per rule, each rewrite and refusal."""
    from flowdsl.wording import plural

    lines: list[str] = []
    for name, before, after in result.counts:
        entries = [r for r in result.log if r.rule == name]
        done = [r for r in entries if r.refused is None]
        refused = [r for r in entries if r.refused is not None]
        lines.append(
            f"rule {name}: {before} -> {plural(after, 'node')} ({plural(len(done), 'rewrite')}, "
            f"{plural(len(refused), 'refusal')})"
        )
        for r in done:
            where = f"[{r.chain}] " if r.chain else ""
            if r.after == r.before:
                lines.append(f"  {where}{' + '.join(r.before)}: {r.detail}")
            else:
                after_txt = ", ".join(r.after) if r.after else "(removed)"
                lines.append(f"  {where}{' + '.join(r.before)} -> {after_txt}: {r.detail}")
        if show_refusals:
            for r in refused:
                where = f"[{r.chain}] " if r.chain else ""
                lines.append(f"  refused {where}{' + '.join(r.before)}: {r.refused}")
    total_before = result.counts[0][1] if result.counts else 0
    total_after = result.counts[-1][2] if result.counts else 0
    lines.append(f"fusion: {total_before} nodes -> {total_after} nodes")
    return "\n".join(lines)


class FusePass:
    """The fusion plan as a pass object: ``requires`` a checked graph, ``call`` plans, ``ensures``
    the rewritten graph is consistent (shapes chain up, every fused node names its origin)."""

    name = "fuse"

    def requires(self, graph: FlowGraph) -> None:
        if "check" not in graph.passes_run:
            raise ValueError(f"pass 'fuse' needs a checked graph; passes run so far: {graph.passes_run}")

    def call(self, graph: FlowGraph) -> PassResult:
        return plan_fusion(graph)

    def ensures(self, result: PassResult) -> None:
        result.graph.verify()
        for node in result.graph.layers():
            if node.meta.get("rule") and node.kind not in ("coupling",) and not node.meta.get("fused_from"):
                raise AssertionError(f"fused node {node.id} does not record the nodes it replaces")

    def __call__(self, graph: FlowGraph) -> PassResult:
        self.requires(graph)
        result = self.call(graph)
        self.ensures(result)
        return result


def explain_fusion(graph: FlowGraph) -> str:
    """The ``flowdsl check --explain`` section: the fusion plan and the fused graph's table."""
    result = FusePass()(graph)
    bar = "=" * 44
    return "\n".join(
        [
            f"==== fusion plan: what model.fuse() does {bar[:20]}",
            format_plan(result),
            "",
            "==== after pass: fuse " + "=" * 56,
            result.graph.format(),
            "",
        ]
    )
