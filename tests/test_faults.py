"""Faults provoked for real: killed stages, killed training, blow-ups, out of memory, bad params."""
from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
import torch
import yaml

from stagerun import finish, stage_cmd, start, wait_for
from stages import download
from stages.io import PAUSE_ENV

# ------------------------------------------------------------------ killed stages

def snapshot(out: Path) -> dict[str, bytes]:
    """Every output file's bytes (a folder's files, or the file itself); pause markers aside."""
    if out.is_file():
        return {out.name: out.read_bytes()}
    return {f.name: f.read_bytes() for f in sorted(out.iterdir())
            if not f.name.endswith(".paused") and ".tmp-" not in f.name}


# where each stage's first output lands, i.e. where the test hook drops its pause marker
MARKER = {"download": "out.paused", "prepare": "out.paused", "recipe": "out.paused",
          "evaluate": "out/confusion.json.paused"}


@pytest.fixture(scope="module")
def trained(work):
    code, log = finish(start(work, stage_cmd(work, "train", work / "trained")))
    assert code == 0, log
    return work / "trained" / "model.ckpt"


@pytest.mark.parametrize("stage", ["download", "prepare", "recipe", "evaluate"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_stage_killed_while_writing_leaves_previous_output_or_none(work, trained, tmp_path, stage,
                                                                   sig):
    out, marker = tmp_path / "out", tmp_path / MARKER[stage]
    if stage == "evaluate":
        out.mkdir()
    # 1) killed before any output existed -> no output at all
    p = start(work, stage_cmd(work, stage, out), **{PAUSE_ENV: "60"})
    wait_for(marker, p)                           # the complete tmp output awaits its rename
    p.send_signal(sig)
    code, log = finish(p)
    assert code != 0
    assert (snapshot(out) == {}) if out.is_dir() else not out.exists()
    if sig != signal.SIGKILL:                     # caught: the temporary output is gone too
        assert not list(tmp_path.rglob("*.tmp-*")), log
    # 2) a clean run replaces leftovers and produces the complete output
    marker.unlink()
    code, log = finish(start(work, stage_cmd(work, stage, out)))
    assert code == 0, log
    assert not list(tmp_path.rglob("*.tmp-*"))
    first = snapshot(out)
    assert first and all(first.values())
    # 3) killed while rewriting -> the previous complete output is still there, unchanged
    p = start(work, stage_cmd(work, stage, out), **{PAUSE_ENV: "60"})
    wait_for(marker, p)
    p.send_signal(sig)
    finish(p)
    assert snapshot(out) == first


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
