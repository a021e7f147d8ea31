"""The training device: CUDA that is there but unusable is said loudly before the CPU fallback,
an explicit gpu or mps that cannot run is an error, and every run records its device."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from augvit.environment import describe
from augvit.io import StageError
from augvit.model import cuda_problem, pick_device
from augvit.params import TrainParams
from conftest import tiny_params

@pytest.fixture
def nvidia_tool(tmp_path) -> Path:
    """A PATH folder holding an `nvidia-smi`: what an NVIDIA driver's install leaves."""
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return tool.parent


def on_path(monkeypatch, folder: Path, **env: str) -> None:
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


@pytest.mark.skipif(cuda_problem() is None, reason="CUDA works here: nothing to fall back from")
def test_an_unusable_cuda_beside_an_nvidia_gpu_is_said_loudly_before_the_cpu(
        nvidia_tool, monkeypatch, capsys):
    on_path(monkeypatch, nvidia_tool)
    assert pick_device("auto").type == "cpu"
    err = capsys.readouterr().err
    assert "WARNING: an NVIDIA GPU is here but" in err and "on the CPU" in err
    assert cuda_problem() in err                                      # why: torch's own words
    assert "train.accelerator: cpu" in err                            # how to silence it


@pytest.mark.skipif(cuda_problem() is None, reason="CUDA works here: nothing to fall back from")
def test_hidden_gpus_and_machines_without_nvidia_fall_back_quietly(
        nvidia_tool, tmp_path, monkeypatch, capsys):
    on_path(monkeypatch, nvidia_tool, CUDA_VISIBLE_DEVICES="")          # a CPU slot
    assert pick_device("auto").type == "cpu"
    if not Path("/proc/driver/nvidia/version").exists():
        monkeypatch.setenv("PATH", str(tmp_path))                     # no NVIDIA tool at all
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
        assert pick_device("auto").type == "cpu"
    assert "WARNING" not in capsys.readouterr().err


@pytest.mark.skipif(cuda_problem() is None, reason="CUDA works here")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_an_explicit_gpu_that_cannot_run_is_an_error_with_the_reason(accelerator):
    with pytest.raises(StageError, match=f"train.accelerator: {accelerator}, but .* cpu"):
        pick_device(accelerator)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS works here")
def test_mps_where_torch_offers_none_is_an_error_naming_it():
    with pytest.raises(StageError, match="train.accelerator: mps, but this torch offers no MPS"):
        pick_device("mps")


def test_mps_is_an_accelerator_choice():
    t = tiny_params()["train"]
    assert TrainParams(**{**t, "accelerator": "mps"}).accelerator == "mps"
    with pytest.raises(Exception, match="mps"):
        TrainParams(**{**t, "accelerator": "tpu"})


def test_a_run_records_its_device():
    assert describe(torch.device("cpu"), "32-true")["device"] == "cpu"
    assert pick_device("cpu").type == "cpu"
