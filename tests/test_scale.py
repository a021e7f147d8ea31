"""Scaling out on Lightning's engine: DDP with two CPU processes (gloo) on the tiny data, and
torch.compile."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import read_model
from stagerun import finish, stage_cmd, start

pytestmark = pytest.mark.e2e


def test_ddp_two_cpu_processes_same_global_batch(work, tmp_path):
    base = yaml.safe_load((work / "params.yaml").read_text())
    base["train"]["epochs"] = 2
    results = {}
    for devices in (1, 2):
        p = json.loads(json.dumps(base))
        p["train"].update(devices=devices, strategy="ddp" if devices > 1 else "auto")
        params = tmp_path / f"p{devices}.yaml"
        params.write_text(yaml.safe_dump(p))
        out = tmp_path / f"d{devices}"
        code, log = finish(start(work, stage_cmd(work, "train", out, params)), timeout=600)
        assert code == 0, log
        if devices > 1:
            assert "distributed_backend=gloo" in log and "All distributed processes registered" \
                in log, log
        ckpt = read_model(out / "seed0.safetensors")
        live = json.loads((out / "live" / "metrics.json").read_text())
        results[devices] = (ckpt, live)
    (c1, _), (c2, m2) = results[1], results[2]
    # the global batch is train.batch_size either way: the same number of optimizer steps
    assert c1["global_step"] == c2["global_step"] == 2 * (90 // 8)
    # metrics are synced over ranks and mean the same thing: accuracies in [0, 1]
    assert 0.0 <= m2["val"]["acc"] <= 1.0 and m2["val"]["loss"] > 0
    assert set(c2["state_dict"]) == set(c1["state_dict"])


def test_torch_compile_is_optional_and_its_model_evaluates(work, tmp_path):
    """train.compile: true compiles the ViT (inductor, on the CPU here); the exported model
    has the plain parameter names, so evaluation rebuilds it like any other."""
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["train"].update(epochs=1, compile=True)
    params = tmp_path / "compile.yaml"
    params.write_text(yaml.safe_dump(p))
    code, log = finish(start(work, stage_cmd(work, "train", tmp_path / "c", params)), timeout=600)
    assert code == 0, log
    ckpt = read_model(tmp_path / "c" / "seed0.safetensors")
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])
    from augvit.evaluation import evaluate
    metrics, _ = evaluate(tmp_path / "c" / "seed0.safetensors", work / "prepared", 16,
                          torch.device("cpu"))
    assert 0.0 <= metrics["acc"] <= 1.0
