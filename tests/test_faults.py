"""Faults provoked for real, in real stage processes: killed stages, killed training, blow-ups,
out of memory, bad params. One real kill per mechanism; the helpers they rely on (atomic
outputs, the choice of a resume state) are tested as units in test_recovery.py."""
from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest
import torch
import yaml

from augvit.data.fetch import fetch
from augvit.io import PAUSE_ENV, TMP_MARK
from conftest import read_model
from stagerun import checkpoint_epochs, finish, stage_cmd, start, wait_for, wait_for_epoch

pytestmark = pytest.mark.e2e

# ------------------------------------------------------------------ killed stages

def snapshot(out: Path) -> dict[str, bytes]:
    """Every output file's bytes (a folder's files, or the file itself); pause markers aside."""
    if out.is_file():
        return {out.name: out.read_bytes()}
    return {f.relative_to(out).as_posix(): f.read_bytes() for f in sorted(out.rglob("*"))
            if f.is_file() and not f.name.endswith(".paused") and ".tmp-" not in str(f)}


def written_tmp(root: Path) -> list[Path]:
    """The non-empty temporary outputs under root (a file, or a folder holding files)."""
    return [t for t in root.rglob(f"*{TMP_MARK}*")
            if (t.is_file() and t.stat().st_size) or (t.is_dir() and any(t.rglob("*.*")))]


# where each stage's first output lands, i.e. where the test hook drops its pause marker
MARKER = {"prepare": "out.paused", "evaluate": "out/details.paused"}


@pytest.fixture(scope="module")
def trained(work):
    code, log = finish(start(work, stage_cmd(work, "train", work / "trained")))
    assert code == 0, log
    return work / "trained" / "seed0.safetensors"


@pytest.mark.parametrize("stage,sig", [("prepare", signal.SIGKILL), ("evaluate", signal.SIGTERM)])
def test_stage_killed_while_writing_leaves_previous_output_or_none(work, trained, tmp_path, stage,
                                                                   sig):
    """The atomic-output mechanism, in a real stage process: a folder output killed outright
    (SIGKILL: nothing can clean up), and file outputs stopped by SIGTERM (caught: the
    temporary output is removed too). Killed first before any output existed, then while an
    earlier complete output is being replaced."""
    out, marker = tmp_path / "out", tmp_path / MARKER[stage]
    if stage == "evaluate":
        out.mkdir()
    # 1) killed before any output existed -> no output at all
    p = start(work, stage_cmd(work, stage, out), **{PAUSE_ENV: "60"})
    wait_for(marker, p)                           # the complete tmp output awaits its rename
    assert written_tmp(tmp_path), "the stage was not mid-write when killed"
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
    assert written_tmp(tmp_path) and snapshot(out) == first   # mid-write, old output intact
    p.send_signal(sig)
    finish(p)
    assert snapshot(out) == first


def slow_params(work: Path, tmp_path: Path, epochs: int = 8, **train) -> Path:
    """The tiny params with a model big enough that an epoch takes a few tenths of a second,
    so a test can kill the run between two epochs."""
    slow = yaml.safe_load((work / "params.yaml").read_text())
    slow["model"].update(hidden_size=96, num_layers=3, num_heads=3)
    slow["train"].update(epochs=epochs, **train)
    params = tmp_path / f"slow-{len(list(tmp_path.glob('slow-*')))}.yaml"
    params.write_text(yaml.safe_dump(slow))
    return params


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_training_killed_mid_run_resumes_and_matches_an_uninterrupted_run(work, tmp_path,
                                                                         ema_decay):
    """SIGKILL once the epoch checkpoint holds epoch 2 of 8: the rerun resumes after the epoch
    the checkpoint holds (< 8), trains only the remaining epochs, and ends bit-identical to an
    uninterrupted run (CPU, same seed) - which also shows runs are deterministic. With an
    average of the weights too: its state is in the checkpoint, so it averages on."""
    params = slow_params(work, tmp_path, ema_decay=ema_decay)
    runs = {}
    for name in ("a", "b"):
        code, log = finish(start(work, stage_cmd(work, "train", tmp_path / name, params)))
        assert code == 0, log
        runs[name] = read_model(tmp_path / name / "seed0.safetensors")
    killed = tmp_path / "k"
    p = start(work, stage_cmd(work, "train", killed, params))
    wait_for_epoch(killed / "resume" / "last.ckpt", p, 2)
    p.send_signal(signal.SIGKILL)
    finish(p)
    done = checkpoint_epochs(killed / "resume" / "last.ckpt")
    assert 2 <= done < 8, done                                  # killed mid-run
    assert not (killed / "seed0.safetensors").exists()
    code, log = finish(start(work, stage_cmd(work, "train", killed, params)))
    assert code == 0, log
    assert f"after epoch {done} of 8" in log and f"training epochs {done + 1}..8" in log, log
    ran = [int(e) for e in re.findall(r"train: epoch (\d+)/8", log)]  # one line per epoch
    assert ran == list(range(done + 1, 9)), (done, ran)           # only the remaining ones
    resumed = read_model(killed / "seed0.safetensors")
    assert resumed["epoch"] == runs["a"]["epoch"] == 7
    for name, ckpt in (("b", runs["b"]), ("resumed", resumed)):
        for k, v in runs["a"]["state_dict"].items():
            assert torch.equal(v, ckpt["state_dict"][k]), f"{name}: {k} differs"
    m_a = json.loads((tmp_path / "a" / "live" / "metrics.json").read_text())
    m_r = json.loads((killed / "live" / "metrics.json").read_text())
    assert m_a["val"] == m_r["val"]
    curve = "plots/metrics/val/acc.tsv"
    assert (killed / "live" / curve).read_text() == (tmp_path / "a" / "live" / curve).read_text()
    assert not (killed / "resume").exists()       # cleaned up once the run is complete


def test_epoch_checkpoint_is_written_after_every_epoch(work, tmp_path):
    """The checkpoint is there during the run, one epoch after another (not only at the end)."""
    params = slow_params(work, tmp_path, epochs=4)
    out = tmp_path / "e"
    p = start(work, stage_cmd(work, "train", out, params))
    seen = set()
    while p.poll() is None:
        ckpt = out / "resume" / "last.ckpt"
        if ckpt.exists():
            seen.add(checkpoint_epochs(ckpt))
        time.sleep(0.02)
    code, log = finish(p)
    assert code == 0, log
    assert {1, 2, 3} <= seen, seen


def test_fresh_flag_and_changed_config_start_over(work, tmp_path):
    params = slow_params(work, tmp_path)
    out = tmp_path / "f"
    for rerun in ("--fresh", "changed config"):
        p = start(work, stage_cmd(work, "train", out, params))
        wait_for_epoch(out / "resume" / "last.ckpt", p, 1)
        p.send_signal(signal.SIGKILL)
        finish(p)
        assert checkpoint_epochs(out / "resume" / "last.ckpt") < 8   # a state to resume from
        if rerun == "--fresh":
            args = stage_cmd(work, "train", out, params) + ["--fresh"]
        else:
            args = stage_cmd(work, "train", out, slow_params(work, tmp_path, lr=0.0005))
        code, log = finish(start(work, args))
        assert code == 0 and "resuming" not in log, log
        assert "train: epoch 1/8" in log, log                         # from the first epoch


def test_non_finite_loss_stops_with_version_and_step(work, tmp_path):
    bad = yaml.safe_load((work / "params.yaml").read_text())
    bad["train"]["lr"] = 1e30
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(bad))
    code, log = finish(start(work, stage_cmd(work, "train", tmp_path / "o", tmp_path / "p.yaml")))
    assert code == 2, log
    assert re.search(r"version 'v' seed 0: loss is (nan|inf) at epoch \d+, step \d+", log), log
    assert "Lower train.lr" in log and "Traceback" not in log
    assert not (tmp_path / "o" / "seed0.safetensors").exists()


def test_out_of_memory_names_run_batch_and_device(work, tmp_path):
    """A real allocation failure on any host: the stage's address space is capped at 8 GiB
    (RLIMIT_AS; importing torch and Lightning takes about 4), and 8 images upscaled to
    8192x8192 need 6 GiB for one tensor."""
    big = yaml.safe_load((work / "params.yaml").read_text())
    big["model"].update(image_size=8192, patch_size=16)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(big))
    p = start(work, stage_cmd(work, "train", tmp_path / "o", tmp_path / "p.yaml"),
              address_space=8 * 2**30)
    code, log = finish(p)
    assert code == 2, log
    assert re.search(r"out of memory training v/finetuned/n90/seed0 on cpu with "
                     r"train.batch_size=8", log), log
    assert "lower train.batch_size" in log and "Traceback" not in log


def test_bad_params_stop_the_stage_before_any_work(work, tmp_path):
    bad = yaml.safe_load((work / "params.yaml").read_text())
    bad["aug"].update(grayscale=0.3, greyscale={"p": 0.1})
    bad["train"]["epochs"] = 0
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(bad))
    code, log = finish(start(work, stage_cmd(work, "download", tmp_path / "raw",
                                             tmp_path / "p.yaml")))
    assert code == 2 and not (tmp_path / "raw").exists()
    for part in ("aug.grayscale: got 0.3", "aug.greyscale: unknown augmentation op",
                 "train.epochs: got 0", "3 problem(s)"):
        assert part in log, log
    assert "Traceback" not in log


def test_checksum_mismatch_stops_download_and_a_match_passes(work, tmp_path):
    from augvit.data.sources import SourceError, file_sha256
    archive = Path(yaml.safe_load((work / "params.yaml").read_text())["data"]["source"])
    with pytest.raises(SourceError, match="archive sha256 is .* but data.sha256 expects 0{64}"):
        fetch(str(archive), tmp_path / "raw", "0" * 64)
    assert not (tmp_path / "raw").exists()
    rec = fetch(str(archive), tmp_path / "raw", file_sha256(archive))
    assert rec["archive_sha256"] == file_sha256(archive)


def test_how_often_it_validates_changes_no_trained_weight_and_the_average_is_what_is_saved(
        work, tmp_path):
    """Validation draws no randomness and touches no weight: every 1 or every 3 epochs, the
    model file is the same bytes. An exponential moving average of the weights is saved in
    its place when train.ema_decay > 0."""
    files = {}
    for name, train in (("every1", {"val_every": 1}), ("every3", {"val_every": 3}),
                        ("ema", {"val_every": 3, "ema_decay": 0.9})):
        out = tmp_path / name
        code, log = finish(start(work, stage_cmd(work, "train", out,
                                                 slow_params(work, tmp_path, 6, **train))))
        assert code == 0, log
        files[name] = (out / "seed0.safetensors").read_bytes()
        if name == "every3":                 # a curve point every 3 epochs, no stale numbers
            assert "train: epoch 2/6 train loss" in log and "val acc" not in \
                log.split("train: epoch 2/6")[1].splitlines()[0]
            assert "val acc" in log.split("train: epoch 3/6")[1].splitlines()[0]
    assert files["every1"] == files["every3"]
    assert files["ema"] != files["every3"]
