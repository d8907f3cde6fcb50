"""The compiled flow: a chain of bijector modules, a prior, and one latent tensor of x's shape.

``FlowModel`` is what :func:`flowdsl.compile` returns; :meth:`FlowModel.from_graph` lowers a
checked ``FlowGraph`` to it (each layer node through its kind's ``@lowering``, the prior through
``@prior_lowering``), and the model keeps that graph (``model.graph``, ``model.spec``).

    z, logdet = model(x)          x: (B, *input_shape) -> z: (B, *input_shape), logdet: (B,)
    x = model.inverse(z)
    model.log_prob(x)             log p_prior(z) + logdet, (B,) nats
    model.sample(n, temperature)
    model.latent_scales()         (input_shape) long tensor: the scale (level) of each latent
    model.fuse()                  inference module with the same forward/inverse/log_prob

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

from flowdsl.runtime.bijector import Bijector, Chain, Provenance
from flowdsl.runtime.fusion.ops.kernels import acc_dtype

__all__ = ["FlowModel", "FusedFlow", "lower_node"]


def lower_node(graph: Any, node: Any) -> Bijector:
    """The module of one layer node (bodies of composite kinds lowered first), with its provenance."""
    from flowdsl.runtime.layers import layer_lowering

    bodies = None
    if node.body_chains:
        bodies = {
            label: Chain([lower_node(graph, graph.node(c)) for c in chain]) for label, chain in node.body_chains.items()
        }
    module = layer_lowering(node.kind)(node.args, node.in_shape, bodies)
    module.provenance = Provenance(node.id, node.span.line)
    return module


class FlowModel(nn.Module):
    """A compiled normalizing flow (see the module docstring for the API)."""

    def __init__(self, graph: Any, steps: list[Bijector], prior: nn.Module, fused: bool = False) -> None:
        super().__init__()
        self.graph = graph
        self.spec = graph.spec.with_graph(graph)
        self.input_shape: tuple[int, ...] = tuple(graph.input_shape)
        self.steps = nn.ModuleList(steps)
        self.prior = prior
        self.node_ids = list(graph.chain)
        self.is_fused = fused
        self._build_layout()

    @classmethod
    def from_graph(cls, graph: Any, seed: int | None = None) -> "FlowModel":
        """Lower a checked ``FlowGraph``; parameters are initialised from ``seed`` (default: the
        spec's ``train(seed=...)``) without disturbing the global random state."""
        from flowdsl.runtime.priors import get_prior_lowering

        spec = graph.spec
        seed = spec.train.seed if seed is None else seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            steps = [lower_node(graph, graph.node(nid)) for nid in graph.chain]
            prior = get_prior_lowering(spec.prior.name)(spec.prior.args, tuple(spec.input.shape))
        return cls(graph, steps, prior)

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
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, *input_shape) -> z (B, *input_shape), log|det ∂z/∂x| (B,)."""
        return self._chain_forward(x, x.new_zeros(x.shape[0]))

    def inverse(self, z: Tensor) -> Tensor:
        """z (B, *input_shape) -> x (B, *input_shape), the exact inverse of ``forward``."""
        parts = self._disassemble(z)
        return self._chain_inverse(parts[-1], parts)

    def _chain_forward(self, h: Tensor, logdet: Tensor) -> tuple[Tensor, Tensor]:
        """Run the steps from x: split steps emit latents, the others add their log-dets to
        ``logdet`` (its dtype is the accumulation dtype); returns the assembled z and the sum."""
        latents: list[Tensor] = []
        for step in self.steps:
            if step.factor_out:
                h, lat = step.split(h)
                latents.append(lat)
            else:
                h, ld = step(h)
                logdet = logdet + ld
        latents.append(h)
        return self._assemble(latents), logdet

    def _chain_inverse(self, h: Tensor, parts: list[Tensor]) -> Tensor:
        """Run the steps backwards from the chain's final output ``h``; split steps merge back
        their latent from ``parts`` (the output of ``_disassemble``)."""
        k = len(parts) - 2
        for step in reversed(self.steps):
            if step.factor_out:
                h = step.merge(h, parts[k])
                k -= 1
            else:
                h = step.inverse(h)
        return h

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) in nats, (B,): prior log-density of z plus the log-determinant."""
        z, logdet = self(x)
        return self.prior.log_prob(z) + logdet

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """n samples of x, drawing z from the prior at the given temperature."""
        ref = self._scatter
        p = next(iter(self.parameters()), None)
        dtype = p.dtype if p is not None else _buffer_dtype(self)
        z = self.prior.sample(n, temperature=temperature, device=ref.device, dtype=dtype)
        return self.inverse(z)

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
    def find_nonfinite(self, x: Tensor) -> str | None:
        """Run forward layer by layer and describe the first layer whose output or log-det is
        NaN/Inf ("layer coupling3 (line 12, coupling)"), or None when everything is finite.

        Diagnostic only (it synchronises with the host); training calls it after a bad step.
        """
        if not torch.isfinite(x).all():
            return "the input batch itself"
        h = x
        for step in self.steps:
            where = f"layer {step.node_id or type(step).__name__} (line {step.source_line}, {type(step).__name__})"
            if step.factor_out:
                h, _ = step.split(h)
                continue
            h, ld = step(h)
            if not torch.isfinite(h).all():
                return f"{where}: non-finite output"
            if not torch.isfinite(ld).all():
                return f"{where}: non-finite log-determinant"
        z, _ = self(x)
        return None if torch.isfinite(self.prior.log_prob(z)).all() else "the prior's log-density"

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

        result, prior = fuse_steps(self)
        fused = FusedFlow(
            result.graph, result.modules, prior, fusion=result, channels_last=channels_last, cuda_graph=cuda_graph
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
    * ``cuda_graph=True``: on CUDA, each direction is captured once per input shape into a CUDA
      graph and replayed (static input/output buffers; outputs are cloned). UNTESTED ON GPU — no GPU
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
    ) -> None:
        super().__init__(graph, steps, prior, fused=True)
        self.fusion = fusion
        self.channels_last = bool(channels_last)
        self.cuda_graph = bool(cuda_graph)
        self._graphs: dict = {}
        self.register_buffer("_dtype_probe", torch.zeros(0), persistent=False)

    # -- directions ---------------------------------------------------------------------
    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._chain_forward(x, x.new_zeros(x.shape[0], dtype=acc_dtype(x.dtype)))

    def _inverse(self, z: Tensor) -> Tensor:
        parts = self._disassemble(z)
        h = parts[-1]
        if self.channels_last and h.dim() == 4:
            h = h.contiguous(memory_format=torch.channels_last)
        return self._chain_inverse(h, parts).contiguous()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, *input_shape) -> z, log|det ∂z/∂x| (float32 for 16-bit inputs)."""
        if self._use_graph(x):
            return self._replay("forward", self._forward, x)
        return self._forward(x)

    def inverse(self, z: Tensor) -> Tensor:
        if self._use_graph(z):
            return self._replay("inverse", self._inverse, z)
        return self._inverse(z)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) in nats, (B,); float32 for 16-bit inputs."""
        z, logdet = self(x)
        if z.dtype != logdet.dtype:
            z = z.to(logdet.dtype)
        return self.prior.log_prob(z) + logdet

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        dtype = self._dtype_probe.dtype
        z = self.prior.sample(n, temperature=temperature, device=self._dtype_probe.device, dtype=dtype)
        return self.inverse(z)

    # -- reporting ------------------------------------------------------------------------
    def fusion_report(self) -> str:
        from flowdsl.compiler.passes.fusion import format_plan

        return format_plan(self.fusion) if self.fusion is not None else "(no fusion log)"

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
