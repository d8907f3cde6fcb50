"""``FusedFlow``: the inference module ``model.fuse()`` returns.

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
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from flowdsl.runtime.fusion.ops.kernels import acc_dtype
from flowdsl.runtime.model import FlowModel

__all__ = ["FusedFlow"]


class FusedFlow(FlowModel):
    """A fused, inference-only flow (see the module docstring)."""

    def __init__(self, spec: Any, steps: list, prior: torch.nn.Module, node_ids: list[str], graph: Any = None,
                 fusion: Any = None, channels_last: bool = False, cuda_graph: bool = False) -> None:
        super().__init__(spec, steps, prior, node_ids, fused=True)
        self.graph = graph
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
