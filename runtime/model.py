"""The compiled flow: a chain of bijector modules, a prior, and one latent tensor of x's shape.

``FlowModel`` is what :func:`flowdsl.compile` returns; :meth:`FlowModel.from_graph` lowers a
checked ``FlowGraph`` to it (each layer node through its kind's ``@lowering``, the prior through
``@prior_lowering``), and the model keeps that graph (``model.graph``, ``model.spec``).

    z, logdet = model(x, context=None)      x: (B, *input_shape) -> z: (B, *input_shape), logdet: (B,)
    x = model.inverse(z, context=None)
    model.log_prob(x, context=None)         log p_prior(z) + logdet, (B,) nats
    model.sample(n, temperature=1.0, *, context=None, return_log_prob=False)   x or (x, log p(x))
    model.inverse_with_log_prob(z, context=None)   (x, log p(x)) in ONE inverse pass
    model.latent_scales()                   (input_shape) long tensor: the scale (level) of each latent
    model.fuse()                            inference module with the same API

Conditional flows (a ``context`` statement in the file): every call takes ``context=`` — labels
long (B,), vectors (B, D), images (B, C, Hc, Wc); one example without the batch dimension, or a
batch of 1, is broadcast. The model validates it (``flowdsl.runtime.context.check_context``: a
missing, superfluous or misshapen context, or a label outside 0…K−1, is a ``ContextError``),
encodes it once with its ``context_encoder`` and hands the ``ContextValue`` to the steps and the
prior that use it (``uses_context``). ``model.context_shape`` / ``context_kind`` /
``context_classes`` describe the declared context (None when unconditional).

Scoring samples: ``inverse_with_log_prob`` runs every step's ``inverse_with_log_det`` (the inverse
and the forward log-det at the returned x, one pass per layer), so log p(x) = log p_prior(z) +
Σ logdet comes with x; ``sample(return_log_prob=True)`` and the exported ``inverse.onnx`` use it.
The temperature only scales the prior's noise; the log-density returned is the model's (T = 1).

Latent layout: the latents that ``split`` factors out and the chain's final output are
flattened, concatenated in forward order, and scattered to the positions of x they came from
(the compiler pushes an index tensor through the position-moving layers, ``squeeze`` and
``split``, once at build time). The scatter is one ``index_select`` with a precomputed index, so
the model has static shapes, exports to ONNX and compiles without graph breaks.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from flowdsl.runtime.bijector import (
    Bijector,
    Chain,
    Provenance,
    call_forward,
    call_inverse,
    call_inverse_with_log_det,
)
from flowdsl.runtime.context import ContextEncoder, ContextValue, EncodedContextInfo, encode
from flowdsl.runtime.fusion.ops.kernels import acc_dtype

__all__ = ["FlowModel", "FusedFlow", "lower_node", "lower_prior", "graph_context_info"]


def graph_context_info(graph: Any) -> EncodedContextInfo | None:
    """The encoded context of a graph's declared context (None when unconditional)."""
    spec = getattr(graph, "context", None)
    filename = getattr(getattr(graph, "spec", None), "filename", "<string>")
    return None if spec is None else EncodedContextInfo.from_spec(spec, filename=filename)


def lower_node(graph: Any, node: Any) -> Bijector:
    """The module of one layer node (bodies of composite kinds lowered first), with its provenance.

    A node whose ``args.context`` is True is lowered with ``context=`` the graph's
    :class:`EncodedContextInfo` (PROTOCOL B); the others as ``fn(args, shape, bodies)``."""
    from flowdsl.runtime.layers import layer_lowering

    bodies = None
    if node.body_chains:
        bodies = {
            label: Chain([lower_node(graph, graph.node(c)) for c in chain]) for label, chain in node.body_chains.items()
        }
    kwargs: dict[str, Any] = {}
    if getattr(node.args, "context", None) is True:
        info = graph_context_info(graph)
        if info is None:  # the checker rejects context=true without a context
            raise ValueError(f"node {node.id} reads a context, but the flow declares none")
        kwargs["context"] = info
    module = layer_lowering(node.kind)(node.args, node.in_shape, bodies, **kwargs)
    module.provenance = Provenance(node.id, node.span.line)
    return module


def lower_prior(graph: Any) -> nn.Module:
    """The prior module of a graph (``conditional=true`` priors get ``context=`` the encoded context)."""
    from flowdsl.runtime.priors import get_prior_lowering

    spec = graph.spec
    fn = get_prior_lowering(spec.prior.name)
    if getattr(spec.prior.args, "conditional", False):
        return fn(spec.prior.args, tuple(spec.input.shape), context=graph_context_info(graph))
    return fn(spec.prior.args, tuple(spec.input.shape))


class FlowModel(nn.Module):
    """A compiled normalizing flow (see the module docstring for the API)."""

    def __init__(
        self,
        graph: Any,
        steps: list[Bijector],
        prior: nn.Module,
        fused: bool = False,
        context_encoder: nn.Module | None = None,
        context_info: EncodedContextInfo | None = None,
    ) -> None:
        super().__init__()
        self.graph = graph
        self.spec = graph.spec.with_graph(graph)
        self.input_shape: tuple[int, ...] = tuple(graph.input_shape)
        self.steps = nn.ModuleList(steps)
        self.prior = prior
        self.node_ids = list(graph.chain)
        self.is_fused = fused
        #: the declared context as the runtime sees it (None when unconditional)
        self.context_info = context_info if context_info is not None else graph_context_info(graph)
        if self.context_info is not None and context_encoder is None:
            context_encoder = ContextEncoder(self.context_info)
        #: the model-level context encoder raw -> embedding (None when unconditional)
        self.context_encoder = context_encoder
        self._build_layout()

    @classmethod
    def from_graph(cls, graph: Any, seed: int | None = None) -> "FlowModel":
        """Lower a checked ``FlowGraph``; parameters are initialised from ``seed`` (default: the
        spec's ``train(seed=...)``) without disturbing the global random state. The context
        encoder (conditional flows) is initialised after the steps and the prior."""
        spec = graph.spec
        seed = spec.train.seed if seed is None else seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            steps = [lower_node(graph, graph.node(nid)) for nid in graph.chain]
            prior = lower_prior(graph)
            info = graph_context_info(graph)
            encoder = ContextEncoder(info) if info is not None else None
        return cls(graph, steps, prior, context_encoder=encoder)

    # -- the context -------------------------------------------------------------------------
    @property
    def context_shape(self) -> tuple[int, ...] | None:
        """Per-example shape of the declared context: label (), vector (D,), image (C, H, W); None
        when the flow has no context."""
        return None if self.context_info is None else tuple(self.context_info.shape)

    @property
    def context_kind(self) -> str | None:
        """The context kind ("label", "vector" or "image"); None when the flow has no context."""
        return None if self.context_info is None else self.context_info.kind

    @property
    def context_classes(self) -> int | None:
        """K for a ``context label(classes=K)``, else None."""
        return None if self.context_info is None else self.context_info.classes

    def encode_context(
        self, context: Any, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> ContextValue | None:
        """Validate and encode ``context`` for ``batch`` examples (None for an unconditional flow;
        raises ``ContextError``, see the module docstring). Floating contexts are cast to
        ``dtype`` (default: the model's), everything is moved to ``device``. A ContextValue is
        taken as already encoded (``log_prob`` hands its own to ``forward``)."""
        if isinstance(context, ContextValue) and self.context_info is not None:
            return context
        if device is None or dtype is None:
            ref = self._ref_tensor()
            device = ref.device if device is None else device
            dtype = ref.dtype if dtype is None else dtype
        return encode(self.context_info, self.context_encoder, context, batch, device, dtype)

    def _ref_tensor(self) -> Tensor:
        """A tensor on the model's device in its floating dtype (for sampling)."""
        p = next(iter(self.parameters()), None)
        if p is not None:
            return p
        return torch.zeros(0, dtype=_buffer_dtype(self), device=self._scatter.device)

    def _prior_log_prob(self, z: Tensor, cv: ContextValue | None) -> Tensor:
        return self.prior.log_prob(z, cv) if getattr(self.prior, "uses_context", False) else self.prior.log_prob(z)

    def _prior_sample(
        self, n: int, temperature: float, device: torch.device, dtype: torch.dtype, cv: ContextValue | None
    ) -> Tensor:
        if getattr(self.prior, "uses_context", False):
            return self.prior.sample(n, temperature=temperature, device=device, dtype=dtype, context=cv)
        return self.prior.sample(n, temperature=temperature, device=device, dtype=dtype)

    # -- layout ------------------------------------------------------------------------
    @torch.no_grad()
    def _build_layout(self) -> None:
        n = math.prod(self.input_shape)
        idx = torch.arange(n, dtype=torch.float64).reshape(1, *self.input_shape)
        level = torch.full((1, *self.input_shape), -1.0, dtype=torch.float64)
        pieces: list[Tensor] = []
        levels: list[Tensor] = []
        shapes: list[tuple[int, ...]] = []
        n_split = 0
        for step in self.steps:
            if step.factor_out:
                idx, lat_idx = step.split(idx)
                level, lat_level = step.split(level)
                lat_level = torch.where(lat_level < 0, torch.full_like(lat_level, float(n_split)), lat_level)
                pieces.append(lat_idx.reshape(-1))
                levels.append(lat_level.reshape(-1))
                shapes.append(tuple(lat_idx.shape[1:]))
                n_split += 1
                continue
            if step.moves_positions:
                idx = step(idx.to(_param_dtype(step)))[0].to(torch.float64)
                level = step(level.to(_param_dtype(step)))[0].to(torch.float64)
            lv = step.latent_levels()
            if lv is not None:
                lv = lv.to(torch.float64).reshape(1, *idx.shape[1:])
                level = torch.where(level < 0, lv + n_split, level)
        level = torch.where(level < 0, torch.full_like(level, float(n_split)), level)
        pieces.append(idx.reshape(-1))
        levels.append(level.reshape(-1))
        shapes.append(tuple(idx.shape[1:]))
        gather = torch.cat(pieces).round().long()  # gather[k] = position in x of concatenated latent k
        assert torch.equal(torch.sort(gather).values, torch.arange(n)), "latent layout is not a permutation"
        scatter = torch.argsort(gather)
        scales = torch.empty(n, dtype=torch.long)
        scales[gather] = torch.cat(levels).round().long()
        self.latent_shapes = shapes
        self.latent_sizes = [math.prod(s) for s in shapes]
        self.identity_layout = bool(torch.equal(gather, torch.arange(n)))
        self.register_buffer("_gather", gather, persistent=False)
        self.register_buffer("_scatter", scatter, persistent=False)
        self.register_buffer("_scales", scales.reshape(self.input_shape), persistent=False)

    def _assemble(self, latents: list[Tensor]) -> Tensor:
        flat = torch.cat([latent.reshape(-1, s) for latent, s in zip(latents, self.latent_sizes)], dim=1)
        if not self.identity_layout:
            flat = flat.index_select(1, self._scatter)
        return flat.reshape(-1, *self.input_shape)

    def _disassemble(self, z: Tensor) -> list[Tensor]:
        flat = z.reshape(-1, math.prod(self.input_shape))
        if not self.identity_layout:
            flat = flat.index_select(1, self._gather)
        parts = torch.split(flat, self.latent_sizes, dim=1)
        return [p.reshape(-1, *s) for p, s in zip(parts, self.latent_shapes)]

    # -- the API -------------------------------------------------------------------------
    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        """x (B, *input_shape) -> z (B, *input_shape), log|det ∂z/∂x| (B,)."""
        cv = self.encode_context(context, x.shape[0], x.device, x.dtype)
        return self._chain_forward(x, x.new_zeros(x.shape[0]), cv)

    def inverse(self, z: Tensor, context: Any = None) -> Tensor:
        """z (B, *input_shape) -> x (B, *input_shape), the exact inverse of ``forward``."""
        cv = self.encode_context(context, z.shape[0], z.device, z.dtype)
        return self._inverse(z, cv)

    def _inverse(self, z: Tensor, cv: ContextValue | None = None) -> Tensor:
        parts = self._disassemble(z)
        return self._chain_inverse(parts[-1], parts, cv)

    def inverse_with_log_prob(self, z: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        """z (B, *input_shape) -> (x, log p(x) (B,)) in one inverse pass (see the module docstring)."""
        cv = self.encode_context(context, z.shape[0], z.device, z.dtype)
        return self._inverse_with_log_prob(z, cv)

    def _inverse_with_log_prob(self, z: Tensor, cv: ContextValue | None) -> tuple[Tensor, Tensor]:
        parts = self._disassemble(z)
        x, logdet = self._chain_inverse_with_log_det(parts[-1], parts, z.new_zeros(z.shape[0]), cv)
        return x, self._prior_log_prob(z, cv) + logdet

    def _chain_forward(self, h: Tensor, logdet: Tensor, cv: ContextValue | None = None) -> tuple[Tensor, Tensor]:
        """Run the steps from x: split steps emit latents, the others add their log-dets to
        ``logdet`` (its dtype is the accumulation dtype); returns the assembled z and the sum."""
        latents: list[Tensor] = []
        for step in self.steps:
            if step.factor_out:
                h, lat = step.split(h)
                latents.append(lat)
            else:
                h, ld = call_forward(step, h, cv)
                logdet = logdet + ld
        latents.append(h)
        return self._assemble(latents), logdet

    def _chain_inverse(self, h: Tensor, parts: list[Tensor], cv: ContextValue | None = None) -> Tensor:
        """Run the steps backwards from the chain's final output ``h``; split steps merge back
        their latent from ``parts`` (the output of ``_disassemble``)."""
        return self._chain_inverse_with_log_det(h, parts, None, cv)[0]

    def _chain_inverse_with_log_det(
        self, h: Tensor, parts: list[Tensor], logdet: Tensor | None, cv: ContextValue | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``_chain_inverse`` with every step's forward log-det at its output added to ``logdet``
        (``logdet=None``: no log-dets are computed, and None is returned with x)."""
        k = len(parts) - 2
        for step in reversed(self.steps):
            if step.factor_out:
                h = step.merge(h, parts[k])
                k -= 1
            elif logdet is None:
                h = call_inverse(step, h, cv)
            else:
                h, ld = call_inverse_with_log_det(step, h, cv)
                logdet = logdet + ld
        return h, logdet

    def log_prob(self, x: Tensor, context: Any = None) -> Tensor:
        """log p(x) in nats, (B,): prior log-density of z plus the log-determinant."""
        cv = self.encode_context(context, x.shape[0], x.device, x.dtype)
        z, logdet = self(x, cv)  # through __call__: forward hooks on the model see every evaluation
        return self._prior_log_prob(z, cv) + logdet

    def sample(
        self, n: int, temperature: float = 1.0, *, context: Any = None, return_log_prob: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """n samples of x, drawing z from the prior at the given temperature; with
        ``return_log_prob=True`` also log p(x) (B,) from the same inverse pass."""
        ref = self._ref_tensor()
        cv = self.encode_context(context, n, ref.device, ref.dtype)
        z = self._prior_sample(n, temperature, ref.device, ref.dtype, cv)
        if return_log_prob:
            return self._inverse_with_log_prob(z, cv)
        return self._inverse(z, cv)

    def latent_scales(self) -> Tensor:
        """Long tensor of input_shape: the scale (level) of each latent in ``z``.

        Multi-scale (split) flows: 0 for the latents of the first split, 1 for the next, ...,
        the number of splits for the final output. RG-Flow: the lattice level of each position.
        """
        return self._scales.clone()

    def latents_by_level(self, z: Tensor) -> dict[int, Tensor]:
        """{level: (B, n_level) latents of that level}, in row-major order of ``z``."""
        flat = z.reshape(z.shape[0], -1)
        scales = self._scales.reshape(-1)
        return {int(lv): flat[:, scales == lv] for lv in torch.unique(scales).tolist()}

    @torch.no_grad()
    def find_nonfinite(self, x: Tensor, context: Any = None) -> str | None:
        """Run forward layer by layer and describe the first layer whose output or log-det is
        NaN/Inf ("layer coupling3 (line 12, coupling)"), or None when everything is finite.

        Diagnostic only (it synchronises with the host); training calls it after a bad step.
        """
        if not torch.isfinite(x).all():
            return "the input batch itself"
        cv = self.encode_context(context, x.shape[0], x.device, x.dtype)
        h = x
        for step in self.steps:
            where = f"layer {step.node_id or type(step).__name__} (line {step.source_line}, {type(step).__name__})"
            if step.factor_out:
                h, _ = step.split(h)
                continue
            h, ld = call_forward(step, h, cv)
            if not torch.isfinite(h).all():
                return f"{where}: non-finite output"
            if not torch.isfinite(ld).all():
                return f"{where}: non-finite log-determinant"
        z, _ = self(x, cv)
        return None if torch.isfinite(self._prior_log_prob(z, cv)).all() else "the prior's log-density"

    def fuse(self, *, channels_last: bool = False, cuda_graph: bool = False) -> "FusedFlow":
        """Inference module: weight-only quantities precomputed, fusion passes applied (the rules
        of ``flowdsl.runtime.fusion``, run by ``fusion.fuse.fuse_steps``). An independent copy in
        eval mode, on this model's device and dtype, without gradients.

        Options: ``channels_last`` converts 4-D inputs to channels-last memory format on entry
        (default False: on the CPU the fused coupling convolutions switch to channels-last
        internally, which measured faster than converting the whole chain); ``cuda_graph``
        captures and replays one CUDA graph per input shape on CUDA inputs (untested on a GPU:
        none was available; no effect on the CPU).
        """
        from flowdsl.runtime.fusion.fuse import fuse_steps

        result, prior, encoder = fuse_steps(self)
        fused = FusedFlow(
            result.graph,
            result.modules,
            prior,
            fusion=result,
            channels_last=channels_last,
            cuda_graph=cuda_graph,
            context_encoder=encoder,
            context_info=self.context_info,
        )
        ref = next(iter(self.buffers()), None)
        fused = fused.to(ref.device if ref is not None else torch.device("cpu"))
        fused._dtype_probe = fused._dtype_probe.to(_float_dtype(self))
        for p in fused.parameters():
            p.requires_grad_(False)
        return fused.eval()

    def extra_repr(self) -> str:
        return f"spec={self.spec.name!r}, input_shape={self.input_shape}, fused={self.is_fused}"


def _float_dtype(model: nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _param_dtype(step: nn.Module) -> torch.dtype:
    return torch.float64


def _buffer_dtype(model: nn.Module) -> torch.dtype:
    for b in model.buffers():
        if b.is_floating_point():
            return b.dtype
    return torch.get_default_dtype()


class FusedFlow(FlowModel):
    """A fused, inference-only flow: what ``model.fuse()`` returns.

    Same API as :class:`~flowdsl.runtime.model.FlowModel` (forward, inverse, log_prob, sample,
    latent_scales, ...) over the fused steps, plus:

    * ``graph`` — the fused FlowGraph; ``fusion`` — the log of every rewrite and refusal;
      :meth:`FusedFlow.fusion_report` prints it (the same text as ``flowdsl check --explain``).
    * device and dtype follow the module (``.to()``, ``.double()``, ``.bfloat16()``); there is no
      ``.item()`` or host synchronisation in ``forward``/``inverse``.
    * 16-bit inference: with ``.half()``/``.bfloat16()`` the activations run in 16 bits but every
      log-det is accumulated in float32 and ``forward`` returns it (and ``log_prob``) in float32.
    * ``channels_last=True``: 4-D inputs are converted to channels-last memory format on entry.
    * conditional flows: the context encoder is a frozen copy; couplings whose label context was
      folded into per-class tables read the raw labels (see ``fusion_report()``).
    * ``cuda_graph=True``: on CUDA, each direction is captured once per input shape into a CUDA
      graph and replayed (static input/output buffers; outputs are cloned; calls with a context
      run without the graph). UNTESTED ON GPU — no GPU
      was available when it was written; on the CPU the option does nothing. ``torch.compile(...,
      mode="reduce-overhead")`` is the tested alternative that also uses CUDA graphs.
    """

    def __init__(
        self,
        graph: Any,
        steps: list,
        prior: torch.nn.Module,
        fusion: Any = None,
        channels_last: bool = False,
        cuda_graph: bool = False,
        context_encoder: nn.Module | None = None,
        context_info: EncodedContextInfo | None = None,
    ) -> None:
        super().__init__(graph, steps, prior, fused=True, context_encoder=context_encoder, context_info=context_info)
        self.fusion = fusion
        self.channels_last = bool(channels_last)
        self.cuda_graph = bool(cuda_graph)
        self._graphs: dict = {}
        self.register_buffer("_dtype_probe", torch.zeros(0), persistent=False)

    # -- directions ---------------------------------------------------------------------
    def _enter(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _forward(self, x: Tensor, cv: ContextValue | None = None) -> tuple[Tensor, Tensor]:
        x = self._enter(x)
        return self._chain_forward(x, x.new_zeros(x.shape[0], dtype=acc_dtype(x.dtype)), cv)

    def _inverse(self, z: Tensor, cv: ContextValue | None = None) -> Tensor:
        parts = self._disassemble(z)
        return self._chain_inverse(self._enter(parts[-1]), parts, cv).contiguous()

    def _inverse_with_log_prob(self, z: Tensor, cv: ContextValue | None) -> tuple[Tensor, Tensor]:
        parts = self._disassemble(z)
        acc = acc_dtype(z.dtype)
        start = z.new_zeros(z.shape[0], dtype=acc)
        x, logdet = self._chain_inverse_with_log_det(self._enter(parts[-1]), parts, start, cv)
        zp = z.to(logdet.dtype) if z.dtype != logdet.dtype else z
        return x.contiguous(), self._prior_log_prob(zp, cv) + logdet

    def forward(self, x: Tensor, context: Any = None) -> tuple[Tensor, Tensor]:
        """x (B, *input_shape) -> z, log|det ∂z/∂x| (float32 for 16-bit inputs)."""
        cv = self.encode_context(context, x.shape[0], x.device, x.dtype)
        if cv is None and self._use_graph(x):
            return self._replay("forward", self._forward, x)
        return self._forward(x, cv)

    def inverse(self, z: Tensor, context: Any = None) -> Tensor:
        cv = self.encode_context(context, z.shape[0], z.device, z.dtype)
        if cv is None and self._use_graph(z):
            return self._replay("inverse", self._inverse, z)
        return self._inverse(z, cv)

    def log_prob(self, x: Tensor, context: Any = None) -> Tensor:
        """log p(x) in nats, (B,); float32 for 16-bit inputs."""
        cv = self.encode_context(context, x.shape[0], x.device, x.dtype)
        z, logdet = self(x, cv)
        if z.dtype != logdet.dtype:
            z = z.to(logdet.dtype)
        return self._prior_log_prob(z, cv) + logdet

    def _ref_tensor(self) -> Tensor:
        return self._dtype_probe

    # -- reporting ------------------------------------------------------------------------
    def fusion_report(self) -> str:
        from flowdsl.compiler.passes.fusion import format_plan

        text = format_plan(self.fusion) if self.fusion is not None else "(no fusion log)"
        info = self.context_info
        if info is not None:
            n = sum(p.numel() for p in self.context_encoder.parameters())
            what = {"label": f"{info.classes}×{info.width} embedding table", "vector": "mlp", "image": "conv net"}
            text += f"\ncontext: `{info.declared}` encoder frozen ({what[info.kind]}, {n:,} weights)"
        return text

    # -- CUDA graphs (untested on GPU) --------------------------------------------------
    def _use_graph(self, x: Tensor) -> bool:
        return self.cuda_graph and x.is_cuda and not torch.compiler.is_compiling() and not torch.is_grad_enabled()

    def _replay(self, name: str, fn: Callable, x: Tensor):
        key = (name, tuple(x.shape), x.dtype, x.device, x.stride())
        entry = self._graphs.get(key)
        if entry is None:
            static_in = x.clone()
            stream = torch.cuda.Stream(device=x.device)
            stream.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up: lazy initialisation and oneDNN/cuDNN autotuning
                    fn(static_in)
            torch.cuda.current_stream(x.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = fn(static_in)
            entry = (graph, static_in, static_out)
            self._graphs[key] = entry
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        if isinstance(static_out, tuple):
            return tuple(t.clone() for t in static_out)
        return static_out.clone()

    def _apply(self, fn, recurse: bool = True):
        self._graphs = {}
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", channels_last={self.channels_last}, cuda_graph={self.cuda_graph}"
