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

from augvit.data.decode import prepare
from augvit.data.fetch import fetch
from conftest import ROOT, data_params, make_image_folder, pack, tiny_params, with_study_versions


def make_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with tiny params, the raw and prepared data and a recipe."""
    w = tmp_path_factory.mktemp("faults")
    archive = pack(make_image_folder(w / "imgs", n_train=40, n_test=6), w / "tiny.tar.gz")
    params = tiny_params({"data": {"source": str(archive)}, "versions": {"v": ["hflip", "crop",
                          "color_jitter"]}, "study": {"baseline": "v", "train_sizes": [90]},
                          "train": {"epochs": 6}, "eval": {"batch_size": 16}})
    params["versions"] = {"v": ["hflip", "crop", "color_jitter"]}
    with_study_versions(params, ["v"])
    (w / "params.yaml").write_text(yaml.safe_dump(params))
    fetch(str(archive), w / "raw")
    prepare(data_params(image_size=16, val_fraction=0.25), w / "raw", w / "prepared")
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
        return ["-m", "stages.train", *p, "--version", "v", "--backbone", "finetuned",
                "--train-size", "90", "--seed", "0",
                "--recipe", str(w / "recipe.json"), "--prepared", str(w / "prepared"),
                "--model-out", str(out / "seed0.safetensors"), "--live-out", str(out / "live"),
                "--resume-dir", str(out / "resume")]
    if stage == "recipe":
        return ["-m", "stages.recipe", *p, "--version", "v", "--out", str(out)]
    if stage == "evaluate":
        return ["-m", "stages.evaluate", *p, "--models", str(w / "trained"),
                "--prepared", str(w / "prepared"), "--metrics-out", str(out / "metrics"),
                "--details-out", str(out / "details")]
    raise ValueError(stage)


def start(w: Path, args: list[str], address_space: int | None = None,
          **env: str) -> subprocess.Popen:
    """A stage as a real process; `address_space` caps its memory (bytes, RLIMIT_AS)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    e = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **env}

    def cap() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return subprocess.Popen([sys.executable, *args], cwd=w, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=cap if address_space else None)


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
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"]) + 1


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
