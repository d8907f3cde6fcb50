"""Large specs: the layer limit admits exactly ``max_layers`` layers, and deep block chains expand
without recursing on the Python stack."""

from __future__ import annotations

import pytest

import flowdsl
from flowdsl.compiler.limits import LIMITS
from flowdsl.errors import CheckError, ResourceLimitError


def chain(depth: int, last: str = "actnorm") -> str:
    """Blocks b0 -> b1 -> ... -> b{depth-1}, each calling the next; the last holds ``last``."""
    blocks = [f"block b{i} {{ b{i + 1} }}" for i in range(depth - 1)] + [f"block b{depth - 1} {{ {last} }}"]
    return "\n".join(blocks) + "\nflow t { input vector(dim=4) actnorm b0 }\n"


def test_exactly_max_layers(monkeypatch):
    monkeypatch.setattr(LIMITS, "max_layers", 5000)
    spec = flowdsl.parse("flow t { input vector(dim=4) repeat 5000 { actnorm } }")
    assert len(spec.layers) == 5000
    spec = flowdsl.parse("flow t { input vector(dim=4) repeat 2500 { actnorm } repeat 2499 { actnorm } coupling }")
    assert len(spec.layers) == 5000
    with pytest.raises(ResourceLimitError, match="more than 5000 layers"):
        flowdsl.parse("flow t { input vector(dim=4) repeat 2500 { actnorm } repeat 2500 { actnorm } coupling }")
    with pytest.raises(ResourceLimitError, match="repeat 5001 exceeds the limit of 5000"):
        flowdsl.parse("flow t { input vector(dim=4) repeat 5001 { actnorm } }")


def test_deep_block_chain():
    spec = flowdsl.parse(chain(2000))
    assert [layer.id for layer in spec.layers] == ["actnorm0", "actnorm1"]
    assert spec.layers[0].via == ()
    assert spec.layers[1].via == tuple(f"b{i}" for i in range(2000))


def test_deep_block_chain_recursion_and_hops():
    with pytest.raises(CheckError, match=r"recursion among blocks: b0 -> b1 -> .* -> b1999 -> b0") as info:
        flowdsl.parse(chain(2000, last="b0"))
    assert info.value.line == 2000
    # a wrong value passed down 1,500 blocks is reported where it was written, naming every hop
    depth = 1500
    blocks = [f"block b{i}(h) {{ b{i + 1}(h=$h) }}" for i in range(depth - 1)] + [
        f"block b{depth - 1}(h) {{ coupling(hidden=$h) }}"
    ]
    text = "\n".join(blocks) + "\nflow t { input vector(dim=4) b0(h=1.5) }\n"
    with pytest.raises(
        CheckError,
        match=r"via block b1499's parameter h, from block b1498's parameter h, .*from block b0's parameter h,",
    ) as info:
        flowdsl.parse(text)
    assert (info.value.line, info.value.column) == (depth + 1, 35)
