"""Channel-linear maps y = A·x + b (A acting on the channels of every pixel), in float64.

A :class:`ChannelMap` is either *monomial* — y[c] = s[c]·x[π(c)] + b[c], which covers actnorm
(π = id), permutations (s = 1, b = 0) and their products — or *dense* (A a full C×C matrix:
1×1 convolutions, butterflies over channels). Composition keeps the monomial form when both
sides have it, so merging actnorms and permutations never densifies them.

    a.then(b)       b ∘ a (a applied first)
    matrix()        A as a dense C×C float64 matrix
    log_abs_det()   log|det A| (per pixel; the layer's log-det is H·W times this)

:func:`channel_map_of` reads a map from a bijector in float64 — from the training parameters
when it can (so a float32 model is merged from its exact parameters, not from rounded frozen
buffers), else by pushing the identity through a float64 copy of the module (and then checking
that the module really is channel-linear: same map at every pixel, linear, consistent log-det).
:func:`is_channel_linear` is the static (IR) predicate.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flowdsl.compiler.ir import Node
from flowdsl.compiler.passes.fusion import Refused

__all__ = ["ChannelMap", "channel_map_of", "is_channel_linear", "member_cost", "DENSE_KINDS"]

F64 = torch.float64

#: kinds whose frozen form applies a dense C×C matrix per pixel
DENSE_KINDS = ("conv1x1", "conv", "butterfly")


def is_channel_linear(node: Node) -> bool:
    """The layer is y = A·x + b over the channels (vector entries) of each position, A constant."""
    if node.role != "layer" or node.in_shape is None:
        return False
    if node.kind in ("actnorm", "conv1x1", "permute"):
        return True
    args = node.args
    if node.kind == "butterfly":
        return args.over == "channels" or (len(node.in_shape) == 1 and args.over == "all")
    if node.kind == "conv":
        return int(args.kernel) == 1
    return False


def member_cost(node: Node) -> int:
    """Multiply-adds per position of the layer's inference form (for the densification check)."""
    c = node.in_shape[0]
    if node.kind in ("actnorm", "permute"):
        return c
    if node.kind == "butterfly":
        from flowdsl.runtime.layers.butterfly import DENSE_MAX, ButterflyKind

        depth = ButterflyKind.resolved_depth(node.args, node.in_shape)
        return c * c if c <= DENSE_MAX else 2 * c * max(depth, 1)
    return c * c


@dataclass
class ChannelMap:
    """y = A x + b on channels; monomial (perm, scale) or dense (matrix). All float64."""

    bias: Tensor
    perm: Tensor | None = None
    scale: Tensor | None = None
    dense: Tensor | None = None

    @property
    def n(self) -> int:
        return self.bias.shape[0]

    @property
    def monomial(self) -> bool:
        return self.dense is None

    @staticmethod
    def affine(scale: Tensor, bias: Tensor) -> "ChannelMap":
        return ChannelMap(
            bias=bias.to(F64), perm=torch.arange(scale.shape[0], device=scale.device), scale=scale.to(F64)
        )

    @staticmethod
    def permutation(perm: Tensor) -> "ChannelMap":
        n = perm.shape[0]
        return ChannelMap(
            bias=torch.zeros(n, dtype=F64, device=perm.device),
            perm=perm.long(),
            scale=torch.ones(n, dtype=F64, device=perm.device),
        )

    @staticmethod
    def linear(matrix: Tensor, bias: Tensor | None = None) -> "ChannelMap":
        matrix = matrix.to(F64)
        b = torch.zeros(matrix.shape[0], dtype=F64, device=matrix.device) if bias is None else bias.to(F64)
        return ChannelMap(bias=b, dense=matrix)

    def matrix(self) -> Tensor:
        if self.dense is not None:
            return self.dense
        a = torch.zeros(self.n, self.n, dtype=F64, device=self.bias.device)
        a[torch.arange(self.n, device=a.device), self.perm] = self.scale
        return a

    def then(self, other: "ChannelMap") -> "ChannelMap":
        """other ∘ self."""
        if self.monomial and other.monomial:
            p = other.perm
            return ChannelMap(
                bias=other.scale * self.bias[p] + other.bias, perm=self.perm[p], scale=other.scale * self.scale[p]
            )
        a = other.matrix()
        return ChannelMap(bias=a @ self.bias + other.bias, dense=a @ self.matrix())

    def log_abs_det(self) -> Tensor:
        if self.monomial:
            return torch.log(torch.abs(self.scale)).sum()
        return torch.linalg.slogdet(self.dense)[1]

    def is_identity(self) -> bool:
        if not self.monomial:
            return False
        ar = torch.arange(self.n, device=self.perm.device)
        return bool(torch.equal(self.perm, ar) and torch.all(self.scale == 1) and torch.all(self.bias == 0))

    def check_invertible(self, where: str) -> None:
        if self.monomial:
            if not bool(torch.all(self.scale != 0)):
                raise Refused(f"{where}: a zero scale (the map is singular)")
            return
        sv = torch.linalg.svdvals(self.dense)
        if not bool(torch.isfinite(sv).all()) or not bool(sv.min() > sv.max() * 1e-13):
            raise Refused(f"{where}: the merged matrix is singular to float64 precision (condition > 1e13)")


def channel_map_of(module: torch.nn.Module, node: Node) -> ChannelMap:
    """The float64 channel map of a channel-linear module (raises Refused if it is not one)."""
    from flowdsl.runtime.layers._linear import ChannelLinear
    from flowdsl.runtime.layers.actnorm import ActNorm, ChannelAffine
    from flowdsl.runtime.layers.conv1x1 import Conv1x1
    from flowdsl.runtime.layers.permute import Permute

    with torch.no_grad():
        if isinstance(module, ActNorm):
            return ChannelMap.affine(torch.exp(module.log_scale.detach().to(F64)), module.bias.detach())
        if isinstance(module, ChannelAffine):
            return ChannelMap.affine(module.scale.detach().reshape(-1), module.bias.detach().reshape(-1))
        if isinstance(module, Conv1x1):
            w = module._matrix64() if module.param in ("lu", "qr") else module.weight.detach()
            return ChannelMap.linear(w)
        if isinstance(module, ChannelLinear):
            return ChannelMap.linear(module.weight.detach(), module.bias.detach() if module.has_bias else None)
        if isinstance(module, Permute):
            return ChannelMap.permutation(module.perm)
        matrix = getattr(module, "matrix", None)
        if node.kind == "butterfly" and callable(matrix):
            return ChannelMap.linear(matrix().detach())
    return probe_channel_map(module, tuple(node.in_shape))


def probe_channel_map(module: torch.nn.Module, shape: tuple[int, ...], tol: float = 1e-9) -> ChannelMap:
    """Read A and b by pushing 0 and the channel basis through a float64 copy, then verify."""
    c, spatial = shape[0], shape[1:]
    dev = next((t.device for t in list(module.parameters()) + list(module.buffers())), torch.device("cpu"))
    m = copy.deepcopy(module).to(F64).eval()
    with torch.no_grad():
        zero = torch.zeros(1, *shape, dtype=F64, device=dev)
        y0, ld0 = m(zero)
        basis = (
            torch.eye(c, dtype=F64, device=dev).reshape(c, c, *([1] * len(spatial))).expand(c, c, *spatial).contiguous()
        )
        yb, _ = m(basis)
        cols = (yb - y0).reshape(c, c, -1)  # [input channel, output channel, position]
        bias = y0.reshape(c, -1)
        scale = max(1.0, float(cols.abs().max()), float(bias.abs().max()))
        if (
            float((cols - cols[:, :, :1]).abs().max()) > tol * scale
            or float((bias - bias[:, :1]).abs().max()) > tol * scale
        ):
            raise Refused("not channel-linear: the map differs between positions (e.g. at the borders)")
        a, b = cols[:, :, 0].t().contiguous(), bias[:, 0].contiguous()
        x = torch.randn(2, *shape, dtype=F64, device=dev, generator=torch.Generator(device=dev).manual_seed(0))
        y, _ = m(x)
        ref = torch.einsum("oc,bc...->bo...", a, x) + b.reshape(c, *([1] * len(spatial)))
        if float((y - ref).abs().max()) > tol * max(scale, float(ref.abs().max())):
            raise Refused("not channel-linear: the output is not an affine function of the input")
        expect = torch.linalg.slogdet(a)[1] * math.prod(spatial)
        if float((ld0[0] - expect).abs()) > 1e-9 * max(1.0, float(expect.abs())):
            raise Refused("the module's log-det is not H·W·log|det A| of its channel map")
    return ChannelMap.linear(a, b)
