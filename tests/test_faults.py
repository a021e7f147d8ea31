"""Faults provoked for real: killed stages, killed training, blow-ups, out of memory, bad params."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, make_image_folder, pack
from stages import download, prepare
from stages.io import PAUSE_ENV
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


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
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
    raise ValueError(stage)


def start(w: Path, args: list[str], **env: str) -> subprocess.Popen:
    e = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **env}
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


# ------------------------------------------------------------------ killed stages

@pytest.mark.parametrize("stage", ["download", "prepare"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_stage_killed_while_writing_leaves_previous_output_or_none(work, tmp_path, stage, sig):
    out = tmp_path / "out"
    # 1) killed before any output existed -> no output at all
    p = start(work, stage_cmd(work, stage, out), **{PAUSE_ENV: "60"})
    wait_for(tmp_path / "out.paused", p)          # the complete tmp output awaits its rename
    p.send_signal(sig)
    code, log = finish(p)
    assert code != 0
    assert not out.exists()
    if sig != signal.SIGKILL:                     # caught: the temporary output is gone too
        assert not list(tmp_path.glob("out.tmp-*")), log
    # 2) a clean run replaces leftovers and produces the complete output
    code, log = finish(start(work, stage_cmd(work, stage, out)))
    assert code == 0, log
    assert not list(tmp_path.glob("out.tmp-*"))
    first = sorted(f.name for f in out.iterdir())
    assert first and all((out / f).stat().st_size > 0 for f in first)
    # 3) killed while rewriting -> the previous complete output is still there
    (tmp_path / "out.paused").unlink()
    p = start(work, stage_cmd(work, stage, out), **{PAUSE_ENV: "60"})
    wait_for(tmp_path / "out.paused", p)
    p.send_signal(sig)
    finish(p)
    assert sorted(f.name for f in out.iterdir()) == first


def test_training_killed_resumes_and_matches_an_uninterrupted_run(work, tmp_path):
    """SIGKILL after an epoch checkpoint; the rerun resumes, and the result is bit-identical to
    an uninterrupted run (CPU, same seed) - which also shows runs are deterministic."""
    slow = yaml.safe_load((work / "params.yaml").read_text())   # epochs long enough to hit
    slow["model"].update(hidden_size=96, num_layers=3, num_heads=3)
    slow["train"]["epochs"] = 8
    params = tmp_path / "slow.yaml"
    params.write_text(yaml.safe_dump(slow))
    runs = {}
    for name in ("a", "b"):
        code, log = finish(start(work, stage_cmd(work, "train", tmp_path / name, params)))
        assert code == 0, log
        runs[name] = torch.load(tmp_path / name / "model.ckpt", weights_only=False)
    killed = tmp_path / "k"
    p = start(work, stage_cmd(work, "train", killed, params))
    wait_for(killed / "resume" / "last.ckpt", p)
    p.send_signal(signal.SIGKILL)
    finish(p)
    assert not (killed / "model.ckpt").exists()                 # killed mid-run
    code, log = finish(start(work, stage_cmd(work, "train", killed, params)))
    assert code == 0, log
    assert "resuming" in log
    resumed = torch.load(killed / "model.ckpt", weights_only=False)
    for name, ckpt in (("b", runs["b"]), ("resumed", resumed)):
        for k, v in runs["a"]["state_dict"].items():
            assert torch.equal(v, ckpt["state_dict"][k]), f"{name}: {k} differs"
    m_a = json.loads((tmp_path / "a" / "live" / "metrics.json").read_text())
    m_r = json.loads((killed / "live" / "metrics.json").read_text())
    assert m_a["val"] == m_r["val"]
    assert not (killed / "resume").exists()       # cleaned up once the run is complete


def test_fresh_flag_and_changed_config_start_over(work, tmp_path):
    out = tmp_path / "f"
    p = start(work, stage_cmd(work, "train", out))
    wait_for(out / "resume" / "last.ckpt", p)
    p.send_signal(signal.SIGKILL)
    finish(p)
    changed = yaml.safe_load((work / "params.yaml").read_text())
    changed["train"]["lr"] = 0.0005
    (tmp_path / "p2.yaml").write_text(yaml.safe_dump(changed))
    code, log = finish(start(work, stage_cmd(work, "train", out, tmp_path / "p2.yaml")))
    assert code == 0 and "resuming" not in log, log


def test_non_finite_loss_stops_with_version_and_step(work, tmp_path):
    bad = yaml.safe_load((work / "params.yaml").read_text())
    bad["train"]["lr"] = 1e30
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(bad))
    code, log = finish(start(work, stage_cmd(work, "train", tmp_path / "o", tmp_path / "p.yaml")))
    assert code == 2, log
    assert re.search(r"version 'v' seed 0: loss is (nan|inf) at epoch \d+, step \d+", log), log
    assert "Lower train.lr" in log and "Traceback" not in log
    assert not (tmp_path / "o" / "model.ckpt").exists()


def test_out_of_memory_names_version_batch_and_device(work, tmp_path):
    """A real allocation failure: 8 images upscaled to 24576x24576 need ~58 GB."""
    big = yaml.safe_load((work / "params.yaml").read_text())
    big["model"].update(image_size=24576, patch_size=16)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(big))
    code, log = finish(start(work, stage_cmd(work, "train", tmp_path / "o", tmp_path / "p.yaml")))
    assert code == 2, log
    assert re.search(r"out of memory training v \(seed 0.*on cpu with train.batch_size=8", log)
    assert "lower train.batch_size" in log and "Traceback" not in log


def test_bad_params_stop_the_stage_before_any_work(work, tmp_path):
    bad = yaml.safe_load((work / "params.yaml").read_text())
    bad["aug"] = {"grayscale": 0.3, "greyscale": {"p": 0.1}}
    bad["train"]["epochs"] = 0
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(bad))
    code, log = finish(start(work, stage_cmd(work, "download", tmp_path / "raw",
                                             tmp_path / "p.yaml")))
    assert code == 2 and not (tmp_path / "raw").exists()
    for part in ("aug.grayscale: got 0.3", "aug.greyscale: unknown augmentation op",
                 "train.epochs: got 0", "4 problem(s)"):
        assert part in log, log
    assert "Traceback" not in log


def test_checksum_mismatch_stops_download_and_a_match_passes(work, tmp_path):
    from stages.sources import SourceError, file_sha256
    archive = Path(yaml.safe_load((work / "params.yaml").read_text())["data"]["source"])
    with pytest.raises(SourceError, match="archive sha256 is .* but data.sha256 expects 0{64}"):
        download.run(str(archive), tmp_path / "raw", "0" * 64)
    assert not (tmp_path / "raw").exists()
    rec = download.run(str(archive), tmp_path / "raw", file_sha256(archive))
    assert rec["archive_sha256"] == file_sha256(archive)
