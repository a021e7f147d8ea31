"""Shared fixtures: tiny generated image-folder datasets (tests never download), and params.yaml
with tiny settings (every test's params start from the project's own file: there are no
defaults in the code)."""
from __future__ import annotations

import copy
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLASSES = ["cat", "dog", "frog"]
RECORD_PEAKS = "AUGVIT_RECORD_PEAKS"   # a JSON file: the hostile-input tests add what they measured


def record_peak(key: str, peak_mb: float, input_bytes: int) -> None:
    """With AUGVIT_RECORD_PEAKS=FILE, add a hostile-input test's measurement to FILE (the table
    of docs/security.md ties its figures to bench/results/security/peaks.json, written so):

        AUGVIT_RECORD_PEAKS=bench/results/security/peaks.json \\
            python -m pytest -n 0 tests/test_hostile_data.py tests/test_model.py
    """
    import fcntl
    import json
    import os
    target = os.environ.get(RECORD_PEAKS)
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:             # locked itself: parallel test workers add in turn
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        table = json.loads(text) if text.strip() else {}
        table[key] = {"peak_mb": round(peak_mb, 1), "input_bytes": input_bytes}
        f.seek(0)
        f.truncate()
        f.write(json.dumps(dict(sorted(table.items())), indent=2) + "\n")


def committed_params_text() -> str:
    """The committed params.yaml: after `dvc exp run -S ...` the workspace's file holds that
    experiment's values, and tests of the defaults must not depend on a user's experiments."""
    try:
        return subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, check=True,
                              capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):       # not a git checkout: the file itself
        return (ROOT / "params.yaml").read_text()


DEFAULT_PARAMS = yaml.safe_load(committed_params_text())
# A model and data small enough that a run takes a second or two.
TINY = {
    "data": {"image_size": 16, "val_fraction": 0.25},
    "study": {"seeds": [0], "train_sizes": [24]},
    "model": {"image_size": 16, "patch_size": 8, "hidden_size": 16, "num_layers": 1,
              "num_heads": 2, "mlp_ratio": 2},
    "train": {"epochs": 2, "batch_size": 8, "warmup_epochs": 0.5, "accelerator": "cpu",
              "val_every": 1},
    "eval": {"batch_size": 7},
    "plots": {"preview_images": 2, "preview_draws": 2},
}


def merged(base: dict, *updates: dict) -> dict:
    """A deep copy of `base` with each update applied (mappings merge, other values replace)."""
    out = copy.deepcopy(base)
    for update in updates:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def tiny_params(*updates: dict) -> dict:
    """The project's params.yaml with the tiny settings, then `updates`. The study runs every
    defined version (unless `updates` say otherwise), with the contrasts those allow."""
    out = merged(DEFAULT_PARAMS, TINY, *updates)
    if not any("versions" in u.get("study", {}) for u in updates):
        out["study"]["versions"] = list(out["versions"])
    return with_study_versions(out, out["study"]["versions"])


def with_study_versions(params: dict, versions: list[str]) -> dict:
    """params whose study runs `versions`: contrasts outside them dropped, the baseline kept if
    it is among them (else the first)."""
    st = params["study"]
    st["versions"] = list(versions)
    st["contrasts"] = {k: v for k, v in st["contrasts"].items() if set(v) <= set(versions)}
    if st["baseline"] not in versions:
        st["baseline"] = versions[0]
    return params


def data_params(**changes):
    """DataParams of the project's params.yaml with `changes`."""
    from augvit.params import DataParams
    return DataParams(**{**DEFAULT_PARAMS["data"], **changes})


def image_bytes(rng: np.random.Generator, label: int, mode: str = "RGB", size: int = 32,
                fmt: str = "PNG") -> bytes:
    """A learnable synthetic image: a class-dependent colour ramp plus noise."""
    base = np.zeros((size, size, 3), np.float32)
    base[..., label % 3] = np.linspace(60, 220, size)[None, :]
    base += rng.normal(0, 20, base.shape)
    im = Image.fromarray(base.clip(0, 255).astype(np.uint8), "RGB").convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def make_image_folder(root: Path, n_train: int = 12, n_test: int = 4, classes=CLASSES,
                      odd_images: bool = True, seed: int = 0) -> Path:
    """train/<class>/<i>.png and test/<class>/<i>.png; a few grayscale, RGBA, odd-sized ones."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for label, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                mode, size, fmt = "RGB", 32, "PNG"
                if odd_images and i == 1:
                    mode = "L"
                elif odd_images and i == 2:
                    mode = "RGBA"
                elif odd_images and i == 3:
                    size, fmt = 40, "JPEG"
                ext = "jpg" if fmt == "JPEG" else "png"
                (d / f"{i:04d}.{ext}").write_bytes(image_bytes(rng, label, mode, size, fmt))
    return root


def pack(folder: Path, out: Path) -> Path:
    """Archive `folder`'s contents as .tar.gz, .tar or .zip (by out's suffix)."""
    if out.name.endswith(".zip"):
        with zipfile.ZipFile(out, "w") as zf:
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(folder).as_posix())
    else:
        mode = "w:gz" if out.name.endswith((".tar.gz", ".tgz")) else "w"
        with tarfile.open(out, mode) as tf:
            for child in sorted(folder.iterdir()):
                tf.add(child, arcname=child.name)
    return out


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "imgs")


@pytest.fixture
def tiny_archive(tmp_path: Path, image_folder: Path) -> Path:
    return pack(image_folder, tmp_path / "tiny.tar.gz")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Tiny params, raw and prepared data and a recipe, for running stage scripts."""
    from stagerun import make_work
    return make_work(tmp_path_factory)


def read_model(path: Path) -> dict:
    """A model file as one mapping: its config, its tensors and its record (epoch, step)."""
    from safetensors.torch import load_file

    from augvit.model import read_model_file
    config, record, _ = read_model_file(path)
    return {"config": config.model_dump(), "state_dict": load_file(str(path)), **record}
