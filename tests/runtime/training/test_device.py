"""--device resolution with a fake CUDA answer (CUDA itself is untested here)."""

from __future__ import annotations

import argparse

import pytest
import torch

from flowdsl.errors import FlowDSLError
from flowdsl.runtime.training.device import _device_text, resolve_device


def test_auto_is_cpu_without_cuda():
    assert resolve_device("auto", cuda_available=False) == torch.device("cpu")


def test_auto_is_cuda_with_cuda(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto", cuda_available=True, device_count=2) == torch.device("cuda", 0)


def test_local_rank_picks_the_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda", cuda_available=True, device_count=2) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", cuda_available=True, device_count=2) == torch.device("cuda", 0)


def test_missing_cuda_is_a_user_error():
    with pytest.raises(FlowDSLError, match="not available"):
        resolve_device("cuda", cuda_available=False)
    with pytest.raises(FlowDSLError, match="does not exist"):
        resolve_device("cuda:3", cuda_available=True, device_count=1)


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:-1", "mps:0", ""])
def test_bad_device_text(text):
    with pytest.raises(argparse.ArgumentTypeError):
        _device_text(text)
