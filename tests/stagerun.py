"""Running stage scripts as real processes on tiny prepared data (for fault and scale tests)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, make_image_folder, pack
from stages import download, prepare
from stages.params import DataParams

TINY = {
    "data": {"source": "", "image_size": 16, "val_fraction": 0.25},
    "versions": {"v": ["hflip", "crop", "color_jitter"]},
    "model": {"image_size": 16, "patch_size": 8, "hidden_size": 16, "num_layers": 1,
              "num_heads": 2, "mlp_ratio": 2},
    "train": {"seeds": [0], "epochs": 6, "batch_size": 8, "warmup_epochs": 0.5,
              "accelerator": "cpu"},
    "eval": {"batch_size": 16},
}


def make_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with tiny params, the raw and prepared data and a recipe."""
    w = tmp_path_factory.mktemp("faults")
    archive = pack(make_image_folder(w / "imgs", n_train=40, n_test=6), w / "tiny.tar.gz")
    params = json.loads(json.dumps(TINY))
    params["data"]["source"] = str(archive)
    (w / "params.yaml").write_text(yaml.safe_dump(params))
    download.run(str(archive), w / "raw")
    prepare.run(DataParams(image_size=16, val_fraction=0.25), w / "raw", w / "prepared")
    (w / "recipe.json").write_text(json.dumps(
        {"version": "v", "ops": {"hflip": {"p": 0.5}, "crop": {"scale": [0.3, 1.0],
                                                              "ratio": [0.75, 1.333]},
                                 "color_jitter": {"brightness": 0.2, "contrast": 0.2,
                                                  "saturation": 0.2, "hue": 0.1}}}))
    return w


def stage_cmd(w: Path, stage: str, out: Path, params: Path | None = None) -> list[str]:
    p = ["--params", str(params or w / "params.yaml")]
    if stage == "download":
        return ["-m", "stages.download", *p, "--out", str(out)]
    if stage == "prepare":
        return ["-m", "stages.prepare", *p, "--raw", str(w / "raw"), "--out", str(out)]
    if stage == "train":
        return ["-m", "stages.train", *p, "--version", "v", "--seed", "0", "--freeze", "false",
                "--recipe", str(w / "recipe.json"), "--prepared", str(w / "prepared"),
                "--model-out", str(out / "model.ckpt"), "--live-out", str(out / "live"),
                "--resume-dir", str(out / "resume")]
    if stage == "recipe":
        return ["-m", "stages.recipe", *p, "--version", "v", "--out", str(out)]
    if stage == "evaluate":
        return ["-m", "stages.evaluate", *p, "--model", str(w / "trained" / "model.ckpt"),
                "--prepared", str(w / "prepared"), "--metrics-out", str(out / "metrics.json"),
                "--confusion-out", str(out / "confusion.json")]
    raise ValueError(stage)


def start(w: Path, args: list[str], **env: str) -> subprocess.Popen:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    e = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **env}
    return subprocess.Popen([sys.executable, *args], cwd=w, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out


def wait_for(path: Path, p: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        assert p.poll() is None, f"stage ended before {path} appeared:\n{p.communicate()[0]}"
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.02)




def checkpoint_epochs(path: Path) -> int:
    """Completed epochs in an epoch checkpoint (Lightning stores the 0-based epoch index)."""
    import torch
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"]) + 1


def wait_for_epoch(ckpt: Path, p: subprocess.Popen, epochs: int, timeout: float = 120) -> None:
    """Wait until the run's epoch checkpoint holds at least `epochs` completed epochs."""
    t0, seen = time.time(), None
    while True:
        assert p.poll() is None, f"stage ended before epoch {epochs} was checkpointed " \
            f"(last seen: {seen}):\n{p.communicate()[0]}"
        assert time.time() - t0 < timeout, f"no checkpoint of epoch {epochs} in {ckpt}"
        if ckpt.exists():
            seen = checkpoint_epochs(ckpt)
            if seen >= epochs:
                return
        time.sleep(0.02)
