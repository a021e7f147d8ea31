"""The live curve and a quiet log, in real training processes: DVCLive writes into the run's
folder that dvc.yaml declares while it trains, a killed run's curve continues from its
checkpoint even after DVC removed the folder, and the stage's log holds progress, no noise."""
from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml

from augvit.training import UnsafeCheckpointError, restore_live
from stagerun import checkpoint_epochs, finish, stage_cmd, start, wait_for_epoch

CURVE = "plots/metrics/val/acc.tsv"


def slow_params(work: Path, tmp_path: Path, epochs: int) -> Path:
    """Tiny params with a model big enough that an epoch takes a few tenths of a second."""
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["model"].update(hidden_size=96, num_layers=3, num_heads=3)
    p["train"].update(epochs=epochs)
    out = tmp_path / f"slow-{epochs}.yaml"
    out.write_text(yaml.safe_dump(p))
    return out


def rows(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:] if path.is_file() else []


def curve_files(live: Path) -> dict[str, str]:
    return {f.relative_to(live).as_posix(): f.read_text() for f in sorted(live.rglob("*"))
            if f.is_file()}


@pytest.mark.e2e
def test_the_curve_is_written_while_the_run_trains_and_the_log_is_quiet(work, tmp_path):
    out = tmp_path / "run"
    p = start(work, stage_cmd(work, "train", out, slow_params(work, tmp_path, 8)))
    seen, t0 = [], time.time()
    while p.poll() is None and time.time() - t0 < 240:
        n = len(rows(out / "live" / CURVE))
        if n and (not seen or seen[-1] != n) and not (out / "seed0.safetensors").exists():
            seen.append(n)          # read during training: the model file is not there yet
        time.sleep(0.02)
    code, log = finish(p)
    assert code == 0, log
    assert seen and seen[0] < 8, f"no curve rows before the run ended: {seen}"
    assert len(rows(out / "live" / CURVE)) == 8
    # the log: one line per epoch and the end, no warnings, tips or deprecations
    assert [int(e) for e in re.findall(r"train: epoch (\d+)/8", log)] == list(range(1, 9)), log
    noise = [line for line in log.splitlines()
             if re.search(r"warn|deprecat|tip:|\.py:\d+:|not empty|hint", line, re.I)]
    assert not noise, "\n".join(noise)


@pytest.mark.e2e
def test_a_killed_run_continues_its_curve_after_dvc_removed_it(work, tmp_path):
    """SIGKILL after epoch 2's checkpoint; the live folder then removed, as `dvc repro` removes
    a stage's outputs before it reruns it. The resumed run's curve files equal an uninterrupted
    run's: every step once, none missing."""
    params = slow_params(work, tmp_path, 6)
    code, log = finish(start(work, stage_cmd(work, "train", tmp_path / "a", params)))
    assert code == 0, log
    killed = tmp_path / "k"
    p = start(work, stage_cmd(work, "train", killed, params))
    wait_for_epoch(killed / "resume" / "last.ckpt", p, 2)
    p.send_signal(signal.SIGKILL)
    finish(p)
    assert 2 <= checkpoint_epochs(killed / "resume" / "last.ckpt") < 6
    shutil.rmtree(killed / "live")
    code, log = finish(start(work, stage_cmd(work, "train", killed, params)))
    assert code == 0 and "resuming" in log, log
    want, got = curve_files(tmp_path / "a" / "live"), curve_files(killed / "live")
    assert sorted(got) == sorted(want)
    for name in want:
        if name.endswith(".tsv"):
            assert got[name] == want[name], name
    assert json.loads(got["metrics.json"]) == json.loads(want["metrics.json"])


def test_restore_live_rebuilds_exactly_the_checkpointed_files(tmp_path):
    live = tmp_path / "live"
    (live / "plots").mkdir(parents=True)
    (live / "plots" / "stale.tsv").write_text("step\tx\n99\t1\n")    # rows past the checkpoint
    files = {"metrics.json": "{}", "plots/metrics/val/acc.tsv": "step\tacc\n3\t0.5\n"}
    restore_live(live, {"callbacks": {"EpochLog": {"live_files": files}}}, tmp_path / "c.ckpt")
    assert curve_files(live) == files


@pytest.mark.parametrize("bad", ["../outside.tsv", "/etc/evil.tsv", "plots/../../x.tsv"])
def test_restore_live_refuses_a_path_outside_the_curve_folder(tmp_path, bad):
    live = tmp_path / "run" / "live"
    live.mkdir(parents=True)
    (live / "metrics.json").write_text("{}")
    files = {"metrics.json": "{}", bad: "step\tacc\n"}
    with pytest.raises(UnsafeCheckpointError, match=re.escape(repr(bad))):
        restore_live(live, {"callbacks": {"EpochLog": {"live_files": files}}}, tmp_path / "c")
    assert curve_files(live) == {"metrics.json": "{}"}          # nothing touched
    assert not (tmp_path / "run" / "outside.tsv").exists() and not (tmp_path / "x.tsv").exists()
