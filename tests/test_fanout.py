"""The study fanned out over one machine's devices (augvit/fanout.py): slots, slices, and the
real fan-out on CPU slots, killed and resumed, against `dvc repro` one run after another."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from augvit.fanout import (RWLOCK, FanoutError, cpu_slots, gpu_slots, parse_slice,
                           run_stages, visible_gpus)
from augvit.params import load_params
from conftest import ROOT
from studyrun import (ONE_THREAD, assert_same_study, clone, dvc_status, kill_session,
                      lock_stages, pipeline_stages, reference, study_params)
from test_pipeline import env


def test_cpu_slots_pin_their_own_cores_and_threads():
    two = cpu_slots(2, 1, [0, 1])
    assert [s.cpus for s in two] == [(0,), (1,)]
    assert all(s.env == ONE_THREAD for s in two)
    (one,) = cpu_slots(1, None, [0, 1])                   # default: every core, one slot
    assert one.cpus == (0, 1) and one.env["OMP_NUM_THREADS"] == "2"
    over = cpu_slots(3, 1, [0, 1])                        # more threads than cores: not pinned
    assert [s.cpus for s in over] == [(), (), ()]


def test_gpu_slots_share_each_gpu_or_group_of_train_devices():
    slots = gpu_slots(["0", "1", "2", "3"], per_gpu=2, devices_per_run=1, cpus=16, threads=None)
    assert sorted(s.env["CUDA_VISIBLE_DEVICES"] for s in slots) == ["0", "0", "1", "1", "2",
                                                                    "2", "3", "3"]
    assert {s.env["OMP_NUM_THREADS"] for s in slots} == {"2"}        # 16 cores / 8 slots
    assert len({s.name for s in slots}) == 8
    pairs = gpu_slots(["0", "1", "2"], per_gpu=1, devices_per_run=2, cpus=4, threads=None)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in pairs] == ["0,1"]   # GPU 2 left idle
    with pytest.raises(FanoutError, match="train.devices is 4 but 3 GPU"):
        gpu_slots(["0", "1", "2"], per_gpu=1, devices_per_run=4, cpus=4, threads=None)


def test_visible_gpus_follow_the_schedulers_allocation(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_slices_are_disjoint_cover_the_study_and_start_with_the_largest_size(tmp_path):
    params = study_params(tmp_path / "data.tgz")
    params["study"].update(seeds=[0, 1, 2], train_sizes=[24, 48])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    params = load_params(path)
    every = run_stages(params, None)
    assert all(s.startswith("train@") for s in every) and len(every) == len(set(every))
    sizes = [int(s.rsplit("-", 2)[1]) for s in every]
    assert sizes == sorted(sizes, reverse=True)
    parts = [run_stages(params, (i, 4)) for i in range(4)]
    assert sorted(s for p in parts for s in p) == sorted(every)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("text", ["3/3", "1", "a/2", "-1/2"])
def test_a_slice_is_i_of_n(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected I/N"):
        parse_slice(text)


def fanout(project: Path, *args: str, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "augvit.fanout", *args], cwd=project,
                            env={**env(), **extra_env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def training_locks(project: Path) -> int:
    """How many trainings DVC has locked to run (their outputs' write locks)."""
    try:
        locks = json.loads((project / RWLOCK).read_text())
    except (OSError, ValueError):
        return 0
    return sum(path.endswith(".safetensors") for path in locks.get("write", {}))


@pytest.mark.e2e
def test_fanout_killed_resumes_and_equals_one_run_after_another(tmp_path_factory):
    """Two CPU slots of one thread, killed (every process, SIGKILL) while both run a training:
    run again, it trains what is left (DVC clears the dead processes' locks); the study equals
    `dvc repro` one run after another with one thread, dvc.lock holds every stage and `dvc
    status` is clean; a third run does nothing."""
    ref = reference(tmp_path_factory)
    proj = clone(tmp_path_factory, "fanout")
    slots = ("--cpu-slots", "2", "--threads", "1")
    p = fanout(proj, *slots)
    deadline = time.time() + 300
    while training_locks(proj) < 2:
        assert p.poll() is None, p.communicate()[0][-3000:]
        assert time.time() < deadline, "the slots never both started a training"
        time.sleep(0.05)
    kill_session(p.pid)
    p.communicate()
    trains = {s for s in pipeline_stages(proj) if s.startswith("train@")}
    assert len(trains) == 4 and not trains & lock_stages(proj)

    again = fanout(proj, *slots)
    out = again.communicate(timeout=600)[0]
    assert again.returncode == 0, out[-4000:]
    assert "4 of 4 trainings to run on 2 slot(s)" in out and "4 trained" in out, out
    logs = "".join(f.read_text() for f in (proj / ".dvc/tmp/fanout").glob("train-*.log"))
    # DVC drops the dead processes' entries from its lock table, or the fan-out empties a
    # table that a process killed mid-write left unreadable
    assert re.search(r"had been killed. Auto removed it from the lock file|rwlock was left "
                     "unreadable", out + logs), out[-3000:]

    assert dvc_status(proj) == {}
    assert lock_stages(proj) == pipeline_stages(proj)
    files = assert_same_study(proj, ref)
    print(f"fan-out equals one run after another: {files} result files identical")

    third = fanout(proj, *slots)
    out = third.communicate(timeout=300)[0]
    assert third.returncode == 0 and "0 of 4 trainings to run" in out, out
    assert "Running stage" not in out, out


def test_one_thread_per_slot_reaches_torch():
    """A CPU slot's environment sets torch's thread count: nothing in the project sets it."""
    code = "import torch; print(torch.get_num_threads())"
    (slot,) = cpu_slots(1, 1, [0])
    out = subprocess.run([sys.executable, "-c", code], env={**env(), **slot.env},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"


@pytest.mark.parametrize("text,healed", [("", True), ('{"write": {"/p": {"pi', True),
                                         ("null", True), ("{}", False),
                                         ('{"read": {}, "write": {}}', False)])
def test_an_unreadable_dvc_lock_table_is_emptied(tmp_path, text, healed):
    """SIGKILL while DVC rewrites .dvc/tmp/rwlock (in place) leaves it empty or cut; DVC then
    refuses every command until someone deletes it."""
    from augvit.fanout import heal_rwlock
    path = tmp_path / "rwlock"
    path.write_text(text)
    heal_rwlock(path)
    assert path.read_text() == ("{}" if healed else text)
    assert [p.name for p in tmp_path.iterdir()] == ["rwlock"]


def slot_rows(record: dict, name: str) -> list[str]:
    """The rows docs/scale-out.md shows for one measurement (bench/fanout_slots.py)."""
    same = "yes" if record["same_models"] else "no"
    return [f"| [{name}](../bench/results/fanout/{name}) | {c['slots']} x {c['threads']} | "
            f"{c['trainings']} | {c['wall_s']:.0f} | "
            f"{sum(c['training_s']) / len(c['training_s']):.0f} | {c['cpu_s']:.0f} | "
            f"{c['core_share']:.0%} | {same} |"
            for c in record["configs"]]


def test_the_slot_measurements_the_docs_show_are_the_recorded_ones():
    """docs/scale-out.md's table of slots x threads is bench/results/fanout/*.json, row by
    row (rewrite the rows from the files after a new measurement)."""
    page = (ROOT / "docs" / "scale-out.md").read_text()
    shown = [line.strip() for line in page.splitlines() if "bench/results/fanout/" in line
             and line.lstrip().startswith("| [")]
    recorded = [row for f in sorted((ROOT / "bench" / "results" / "fanout").glob("*.json"))
                for row in slot_rows(json.loads(f.read_text()), f.name)]
    assert recorded, "no measurement in bench/results/fanout/"
    assert shown == recorded, "docs/scale-out.md's rows should be:\n" + "\n".join(recorded)


def test_a_gather_that_would_train_stops_the_training_and_names_it():
    """--no-train: the moment DVC starts a training (its run-cache entry is not on the remote),
    the command is stopped and the run named."""
    from augvit.fanout import stream
    code = ("import time; print(\"Stage 'train@a-finetuned-24-0' is cached - skipping run\", "
            "flush=True); print(\"Running stage 'train@b-finetuned-24-1':\", flush=True); "
            "time.sleep(60)")
    t0 = time.time()
    with pytest.raises(FanoutError, match=r"train@b-finetuned-24-1 started training"):
        stream([sys.executable, "-c", code], no_train=True)
    assert time.time() - t0 < 30
    assert stream([sys.executable, "-c", code.replace("60", "0")], no_train=False) == \
        (0, {"train@b-finetuned-24-1"})
