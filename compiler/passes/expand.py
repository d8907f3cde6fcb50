"""Pass 1, ``expand``: syntax tree -> :class:`FlowSpec` (blocks inlined, repeats unrolled).

Resolves block calls (``$param`` substitution, defaults), unrolls ``repeat`` into independent
copies, validates every argument against its kind's pydantic model, and checks the statement
structure (exactly one ``input``, at most one ``context`` (after the input) /
``prior``/``objective``/``train``/``dequantize``, no recursion among blocks), and resolves who uses
the context (:mod:`flowdsl.compiler.passes.context`). Every rejection is a located :class:`CheckError`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from flowdsl import syntax as S
from flowdsl.compiler.kinds import get_layer, get_objective, get_prior, layer_kinds, objective_kinds, prior_kinds
from flowdsl.compiler.limits import LIMITS
from flowdsl.compiler.passes.arguments import ArgumentReader, Origin, pydantic_message
from flowdsl.compiler.passes.context import read_context, resolve_context
from flowdsl.compiler.passes.diagnostics import Diagnostics
from flowdsl.errors import (
    ResourceLimitError,
    Span,
    did_you_mean,
    show_value,
)
from flowdsl.parser import KEYWORDS
from flowdsl.schema import FlowSpec, InputSpec, LayerSpec, ObjectiveSpec, PriorSpec, TrainSpec

__all__ = ["expand"]


_INPUT_ARGS = {
    "image": {"channels": True, "height": True, "width": True, "levels": False},
    "vector": {"dim": True},
}

_TRAIN_FIELDS = [f for f in TrainSpec.model_fields if f not in ("span", "arg_spans")]


class _Expander(ArgumentReader):
    def __init__(self, tree: S.SpecFile, diag: Diagnostics) -> None:
        self.tree = tree
        self.d = diag
        self.blocks: dict[str, S.BlockDef] = {}
        self.counters: dict[str, int] = {}
        self.n_layers = 0
        self.steps_done = 0
        self.max_layers = LIMITS.max_layers
        # the block calls being expanded, outermost first (calls run depth first, see _drive),
        # each name's place in it, and the tuple of it given to layers as ``via`` (built once)
        self.path: list[str] = []
        self.on_path: dict[str, int] = {}
        self.via: tuple[str, ...] | None = ()

    # -- statements ---------------------------------------------------------------------
    def run(self) -> FlowSpec:
        for b in self.tree.blocks:
            if b.name in KEYWORDS:
                self.d.fail(f"'{b.name}' is a keyword and cannot name a block", b.name_span)
            if b.name in self.blocks:
                first = self.blocks[b.name].name_span.line
                self.d.fail(f"block '{b.name}' is defined twice (first on line {first})", b.name_span)
            if get_layer(b.name) is not None:
                self.d.fail(f"block '{b.name}' has the name of a layer; choose another name", b.name_span)
            seen = set()
            for p in b.params:
                if p.name in seen:
                    self.d.fail(f"parameter '{p.name}' of block '{b.name}' is declared twice", p.span)
                seen.add(p.name)
            self.blocks[b.name] = b
        flow = self.tree.flow
        if flow.name in KEYWORDS:
            self.d.fail(f"'{flow.name}' is a keyword and cannot name a flow", flow.name_span)
        self.singletons: dict[str, Any] = {}
        layers = _drive(self.stmts(flow.body, {}, top=True, prefix=""))
        return self.finish(flow, layers)

    def _work(self, span: Span) -> None:
        """Count expansion steps: bounds the time spent on nested repeats of empty bodies."""
        self.steps_done += 1
        if self.steps_done > LIMITS.max_expansion_steps:
            self.d.fail(
                f"the spec takes more than {LIMITS.max_expansion_steps:,} expansion steps (nested repeats or blocks); "
                "reduce the repeat counts",
                span,
                ResourceLimitError,
            )

    def stmts(self, body, env, top: bool, prefix: str):
        """The layers of ``body`` (a generator run by :func:`_drive`: a nested body is yielded and
        its layers are sent back, so deep block chains do not recurse on the Python stack)."""
        out: list[LayerSpec] = []
        for st in body:
            self._work(st.span)
            if isinstance(st, (S.Input, S.ContextStmt, S.Dequantize, S.PriorStmt, S.ObjectiveStmt, S.TrainStmt)):
                kw = {
                    S.Input: "input",
                    S.ContextStmt: "context",
                    S.Dequantize: "dequantize",
                    S.PriorStmt: "prior",
                    S.ObjectiveStmt: "objective",
                    S.TrainStmt: "train",
                }[type(st)]
                if not top:
                    self.d.fail(
                        f"'{kw}' belongs in the flow body, not inside a block, a repeat or a layer's body", st.span
                    )
                if kw in self.singletons:
                    first = self.singletons[kw][0].span.line
                    self.d.fail(f"duplicate '{kw}' statement (first on line {first})", st.span)
                self.singletons[kw] = (st, env)
                continue
            if isinstance(st, S.Repeat):
                n = self.value(st.count, env)
                cspan = getattr(st.count, "span", st.span)
                if isinstance(n, bool) or not isinstance(n, int):
                    self.d.fail(f"repeat count must be a positive integer, got {show_value(n)}", cspan)
                if n < 1:
                    self.d.fail(f"repeat count must be at least 1, got {n}", cspan)
                if n > self.max_layers:
                    self.d.fail(
                        f"repeat {n} exceeds the limit of {self.max_layers} layers "
                        "(set FLOWDSL_MAX_LAYERS to raise it)",
                        cspan,
                        ResourceLimitError,
                    )
                for _ in range(n):
                    self._work(st.span)
                    out.extend((yield self.stmts(st.body, env, top=False, prefix=prefix)))
                continue
            if isinstance(st, S.Call):
                layers = self.call(st, env, prefix)
                out.extend(layers if isinstance(layers, list) else (yield layers))
                continue
            raise AssertionError(st)  # pragma: no cover
        return out

    def _bump(self, span: Span) -> None:
        self.n_layers += 1
        if self.n_layers > self.max_layers:
            self.d.fail(
                f"the spec expands to more than {self.max_layers} layers (set FLOWDSL_MAX_LAYERS to raise the limit)",
                span,
                ResourceLimitError,
            )

    def _via(self) -> tuple[str, ...]:
        """The block calls the current statement was inlined through, outermost first."""
        if self.via is None:
            self.via = tuple(self.path)
        return self.via

    def _new_id(self, prefix: str, kind: str) -> str:
        key = prefix + kind
        i = self.counters.get(key, 0)
        self.counters[key] = i + 1
        return f"{prefix}{kind}{i}"

    def call(self, st: S.Call, env, prefix):
        """The layers of a layer statement (a list) or of a block call (a generator, see :meth:`stmts`)."""
        if st.name in self.blocks:
            block = self.blocks[st.name]
            if st.parts is not None:
                self.d.fail(
                    f"block '{st.name}' is called without a body (only composite layers such as rg take one)", st.span
                )
            if st.name in self.on_path:
                cycle = " -> ".join(self.path[self.on_path[st.name] :] + [st.name])
                self.d.fail(f"recursion among blocks: {cycle}", st.span)
            read = self.named_args(st.args, env, f"block '{st.name}'")
            vals, spans, vspans, passed = read.vals, read.spans, read.vspans, read.origins
            params = {p.name: p for p in block.params}
            for name in vals:
                if name not in params:
                    self.d.fail(
                        f"unknown argument '{name}' for block '{st.name}'{did_you_mean(name, params)}", spans[name]
                    )
            benv: dict[str, Any] = {"__block__": (st.name, st.span)}
            for p in block.params:
                if p.name in vals:
                    up = passed.get(p.name)
                    hops = ((st.name, p.name), up.hops if up else ())
                    o = Origin(up.span if up else vspans[p.name], hops, False if up is None else up.default)
                    benv[p.name] = (vals[p.name], spans[p.name], o)
                elif p.default is not None:
                    dspan = getattr(p.default, "span", p.span)
                    benv[p.name] = (
                        self.value(p.default, {"__default__": (st.name, p.name)}),
                        p.span,
                        Origin(dspan, ((st.name, p.name), ()), True),
                    )
                else:
                    self.d.fail(f"block '{st.name}' needs the argument '{p.name}' (no default)", st.span)
            return self._inline(st.name, block.body, benv, prefix)
        kind = get_layer(st.name)
        if kind is None:
            names = list(layer_kinds()) + list(self.blocks)
            if st.name in KEYWORDS:
                self.d.fail(f"unexpected keyword '{st.name}' here", st.span)
            self.d.fail(f"unknown layer or block '{st.name}'{did_you_mean(st.name, names)}", st.span)
        if kind.bodies:
            if st.parts is None:
                parts = " ".join(f"{p} {{ ... }}" for p in kind.bodies)
                self.d.fail(f"'{st.name}' needs a body: {st.name}(...) {{ {parts} }}", st.span)
            return self.composite(st, kind, env, prefix)
        if st.parts is not None:
            self.d.fail(f"'{st.name}' takes no body (only composite layers such as rg do)", st.span)
        self._bump(st.span)
        read = self.named_args(st.args, env, f"'{st.name}'")
        args = self.validate_args(kind.Args, read, f"'{st.name}'", st.span)
        return [
            LayerSpec(
                id=self._new_id(prefix, st.name),
                kind=st.name,
                args=args,
                span=st.span,
                arg_spans=dict(read.vspans),
                via=self._via(),
            )
        ]

    def _inline(self, name: str, body, benv, prefix: str):
        """The layers of the body of block ``name`` (a generator, see :meth:`stmts`), expanded with
        ``name`` on the call path."""
        via = self.via
        self.on_path[name] = len(self.path)
        self.path.append(name)
        self.via = None
        layers = yield self.stmts(body, benv, top=False, prefix=prefix)
        self.path.pop()
        del self.on_path[name]
        self.via = via
        return layers

    def composite(self, st: S.Call, kind, env, prefix):
        """The layer (a one-item list) of a composite kind's statement with its body parts (a
        generator, see :meth:`stmts`); the part names are the kind's ``bodies``."""
        self._bump(st.span)
        what = f"'{st.name}'"
        read = self.named_args(st.args, env, what)
        args = self.validate_args(kind.Args, read, what, st.span)
        lid = self._new_id(prefix, st.name)
        bodies: dict[str, list[LayerSpec]] = {}
        body_spans = {}
        for part in st.parts:
            if part.name not in kind.bodies:
                known = ", ".join(kind.bodies)
                hint = did_you_mean(part.name, kind.bodies) or f"; {st.name} takes {known}"
                self.d.fail(f"unknown part '{part.name}' of {st.name}{hint}", part.name_span)
            if part.name in bodies:
                self.d.fail(f"duplicate '{part.name}' in {st.name}", part.span)
            bodies[part.name] = yield self.stmts(part.body, env, top=False, prefix=f"{lid}.{part.name}.")
            body_spans[part.name] = part.span
        return [
            LayerSpec(
                id=lid,
                kind=st.name,
                args=args,
                span=st.span,
                arg_spans=dict(read.vspans),
                bodies=bodies,
                body_spans=body_spans,
                via=self._via(),
            )
        ]

    # -- graph-level statements ---------------------------------------------------------
    def named_stmt(self, entry, what: str, lookup, known, model):
        """``prior NAME(...)`` / ``objective NAME(...)`` -> its spec model (defaults when absent)."""
        if entry is None:
            default = model()
            return model(name=default.name, args=lookup(default.name).Args())
        st, env = entry
        kind = lookup(st.name)
        if kind is None:
            self.d.fail(f"unknown {what} '{st.name}'{did_you_mean(st.name, known())}", st.name_span)
        read = self.named_args(st.args, env, f"{what} {st.name}")
        args = self.validate_args(kind.Args, read, f"{what} {st.name}", st.name_span)
        return model(name=st.name, args=args, span=st.name_span, arg_spans=dict(read.vspans))

    def finish(self, flow: S.FlowDef, layers: list[LayerSpec]) -> FlowSpec:
        sing = self.singletons
        if "input" not in sing:
            self.d.fail(
                f"flow '{flow.name}' has no 'input' statement (e.g. input image(channels=1, height=8, width=8))",
                flow.name_span,
            )
        ist, ienv = sing["input"]
        if ist.kind not in _INPUT_ARGS:
            self.d.fail(
                f"unknown input kind '{ist.kind}'{did_you_mean(ist.kind, _INPUT_ARGS)}; use image or vector",
                ist.kind_span,
            )
        vals, spans, vspans = self.named_args(ist.args, ienv, f"input {ist.kind}")[:3]
        allowed = _INPUT_ARGS[ist.kind]
        for name in vals:
            if name not in allowed:
                self.d.fail(f"unknown argument '{name}' for input {ist.kind}{did_you_mean(name, allowed)}", spans[name])
        for name, required in allowed.items():
            if required and name not in vals:
                self.d.fail(f"input {ist.kind} needs the argument '{name}'", ist.kind_span)
        for name, v in vals.items():
            if isinstance(v, bool) or not isinstance(v, int):
                self.d.fail(
                    f"invalid value {show_value(v)} for '{name}' of input {ist.kind}: expected an integer", vspans[name]
                )
            low = 2 if name == "levels" else 1
            if v < low:
                self.d.fail(f"'{name}' of input {ist.kind} must be at least {low}, got {v}", vspans[name])
            if v > LIMITS.max_dim:
                self.d.fail(
                    f"'{name}' of input {ist.kind} is {v}, above the limit of {LIMITS.max_dim}",
                    vspans[name],
                    ResourceLimitError,
                )
        if ist.kind == "image":
            vals.setdefault("levels", 256)
        inp = InputSpec(kind=ist.kind, span=ist.span, **vals)
        if inp.numel > LIMITS.max_input_numel:
            self.d.fail(
                f"input has {inp.numel:,} dimensions, above the limit of {LIMITS.max_input_numel:,}",
                ist.span,
                ResourceLimitError,
            )

        if "context" in sing:
            cst = sing["context"][0]
            if (cst.span.line, cst.span.column) < (ist.span.line, ist.span.column):
                self.d.fail(
                    f"'context' comes after the flow's 'input' statement (line {ist.span.line}); "
                    "move it below the input",
                    cst.span,
                )
        context = read_context(self, sing.get("context"), inp)

        deq = "uniform" if inp.kind == "image" else "none"
        if "dequantize" in sing:
            dst, _ = sing["dequantize"]
            if dst.mode not in ("uniform", "none"):
                self.d.fail(
                    f"unknown dequantization '{dst.mode}'{did_you_mean(dst.mode, ['uniform', 'none'])}", dst.mode_span
                )
            if dst.mode == "uniform" and inp.levels is None:
                self.d.fail("dequantize uniform needs discrete data: an image input with levels", dst.mode_span)
            deq = dst.mode

        prior = self.named_stmt(sing.get("prior"), "prior", get_prior, prior_kinds, PriorSpec)
        objective = self.named_stmt(sing.get("objective"), "objective", get_objective, objective_kinds, ObjectiveSpec)
        layers = resolve_context(layers, prior, context, self.d)

        train = TrainSpec()
        if "train" in sing:
            tst, tenv = sing["train"]
            vals, spans, vspans = self.named_args(tst.args, tenv, "train")[:3]
            for name in vals:
                if name not in _TRAIN_FIELDS:
                    self.d.fail(f"unknown argument '{name}' for train{did_you_mean(name, _TRAIN_FIELDS)}", spans[name])
            vals = {
                k: (
                    float(v)
                    if k in ("lr", "weight_decay", "clip") and isinstance(v, int) and not isinstance(v, bool)
                    else v
                )
                for k, v in vals.items()
            }
            tmodel = TrainSpec.model_validate({})  # defaults
            fields = {k: v for k, v in tmodel.model_dump().items() if k not in ("span", "arg_spans")}
            fields.update(vals)
            try:
                train = TrainSpec.model_validate({**fields, "span": tst.span, "arg_spans": dict(vspans)}, strict=True)
            except ValidationError as e:
                err = e.errors()[0]
                name = str(err["loc"][0]) if err.get("loc") else None
                self.d.fail(
                    f"invalid value {show_value(vals.get(name))} for argument '{name}' of train: "
                    f"{pydantic_message(err)}",
                    vspans.get(name, tst.span),
                )

        return FlowSpec(
            name=flow.name,
            filename=self.d.filename,
            source=self.d.source,
            input=inp,
            context=context,
            dequantize=deq,
            layers=layers,
            prior=prior,
            objective=objective,
            train=train,
            blocks=tuple(self.blocks),
            span=flow.name_span,
        )


def _drive(gen):
    """Run a generator of :class:`_Expander` to its return value with an explicit stack: each
    generator it yields is run in turn and its return value sent back."""
    todo = [gen]
    value = None
    while True:
        try:
            sub = todo[-1].send(value)
        except StopIteration as done:
            todo.pop()
            if not todo:
                return done.value
            value = done.value
        else:
            todo.append(sub)
            value = None


def expand(tree: S.SpecFile, diag: Diagnostics) -> FlowSpec:
    """Run the expansion pass; see the module docstring."""
    return _Expander(tree, diag).run()
