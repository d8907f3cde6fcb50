"""The process-group backend follows the device the model is on; each process takes cuda:$LOCAL_RANK.

No process group is created and no GPU is needed: torch's CUDA and ``torch.distributed`` entry
points are replaced by recorders, so these tests prove the choices flowdsl makes, not that nccl
works (CUDA itself is untested here).
"""

from __future__ import annotations

import pytest
import torch

from flowdsl.errors import FlowDSLError
from flowdsl.runtime.training import distributed as D
from flowdsl.runtime.training.device import resolve_device


def test_backend_is_chosen_by_the_device_not_by_cuda_being_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with GPUs ...
    assert D.backend_for(torch.device("cpu")) == "gloo"  # ... and a model on the CPU: gloo
    assert D.backend_for("cpu") == "gloo"
    assert D.backend_for(torch.device("cuda", 1)) == "nccl"
    assert D.backend_for("cuda") == "nccl"


@pytest.fixture
def fake_group(monkeypatch):
    """torchrun's environment for rank 1 of 2 and recorders instead of a process group."""
    calls: dict[str, list] = {"init": [], "set_device": []}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls["set_device"].append(torch.device(d)))
    monkeypatch.setattr(D.dist, "is_available", lambda: True)
    monkeypatch.setattr(D.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(D.dist, "init_process_group", lambda backend: calls["init"].append(backend))
    monkeypatch.setattr(D.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(D.dist, "get_world_size", lambda: 2)
    return calls


def test_cpu_model_joins_with_gloo_even_when_cuda_exists(fake_group):
    info = D.init_from_env(torch.device("cpu"))
    assert fake_group["init"] == ["gloo"] and fake_group["set_device"] == []
    assert info.device == torch.device("cpu") and info.world == 2 and info.rank == 1


def test_cuda_model_sets_its_local_gpu_then_joins_with_nccl(fake_group):
    dev = resolve_device("auto", cuda_available=True, device_count=2)  # LOCAL_RANK=1
    info = D.init_from_env(dev)
    assert fake_group["set_device"] == [torch.device("cuda", 1)]
    assert fake_group["init"] == ["nccl"] and info.device == torch.device("cuda", 1)


def test_another_processes_gpu_is_a_user_error(fake_group):
    with pytest.raises(FlowDSLError, match="cuda:\\$LOCAL_RANK"):
        D.init_from_env(torch.device("cuda", 0))  # rank with LOCAL_RANK=1 asking for cuda:0
    assert fake_group["init"] == []
    assert D.check_process_device(torch.device("cuda", 3), 3, 4) == torch.device("cuda", 3)
    assert D.check_process_device(torch.device("cuda", 0), 1, 1) == torch.device("cuda", 0)  # one process


def test_single_process_keeps_the_device(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = D.init_from_env("cpu")
    assert not info.active and info.device == torch.device("cpu")
    assert D.init_from_env().device == torch.device("cpu")


def _readme_commands(prefix: str) -> list[list[str]]:
    """The shell commands of the training README that start with ``prefix`` (continuations joined)."""
    import shlex
    from pathlib import Path

    import flowdsl.runtime.training as training

    text = (Path(training.__file__).parent / "README.md").read_text(encoding="utf-8")
    text = text.replace("\\\n", " ")
    return [shlex.split(line.strip(), comments=True) for line in text.splitlines() if line.strip().startswith(prefix)]


def test_readme_documents_a_multi_node_launch_that_torchrun_and_flowdsl_accept():
    from torch.distributed.run import get_args_parser

    from flowdsl.cli import build_parser

    launches = [get_args_parser().parse_args(cmd[1:]) for cmd in _readme_commands("torchrun --nnodes")]
    assert sorted(a.node_rank for a in launches) == [0, 1]
    for a in launches:
        assert a.nnodes == "2" and a.rdzv_backend == "c10d" and ":" in a.rdzv_endpoint
        assert a.module and a.training_script == "flowdsl"
        args = build_parser().parse_args(a.training_script_args)  # flowdsl's own flags are valid
        assert args.command == "train" and args.device == "cuda"
    assert len({a.rdzv_endpoint for a in launches}) == 1  # every node meets at the same endpoint


def test_readme_says_cuda_is_untested_and_documents_devices_and_precision():
    from pathlib import Path

    import flowdsl.runtime.training as training

    text = (Path(training.__file__).parent / "README.md").read_text(encoding="utf-8")
    assert "CUDA itself is untested here" in text
    for needle in ("--device auto|cpu|cuda|cuda:N", "--precision 32|bf16-mixed", "cuda:$LOCAL_RANK", "gloo", "nccl"):
        assert needle in text, needle
    assert "torchrun --standalone --nproc-per-node" in text
