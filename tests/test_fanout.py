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
    with pytest.warns(UserWarning, match=r"GPU\(s\) 2 will sit idle: train.devices is 2"):
        pairs = gpu_slots(["0", "1", "2"], per_gpu=1, devices_per_run=2, cpus=4, threads=None)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in pairs] == ["0,1"]
    with pytest.raises(FanoutError, match="train.devices is 4 but 3 GPU"):
        gpu_slots(["0", "1", "2"], per_gpu=1, devices_per_run=4, cpus=4, threads=None)


def test_cpu_slots_share_the_cores_where_the_os_cannot_pin(monkeypatch):
    """macOS and Windows have no os.sched_setaffinity: the slots are not pinned (no crash)."""
    monkeypatch.delattr("os.sched_setaffinity")
    assert [s.cpus for s in cpu_slots(2, 1, [0, 1])] == [(), ()]


@pytest.mark.parametrize("opts", [["--gpus", "0,1"], ["--per-gpu", "2"]])
def test_gpu_options_without_a_usable_gpu_are_an_error(opts):
    """On a machine without CUDA, asking for GPUs is refused, naming the option, instead of
    silently starting CPU trainings that fight for the cores."""
    from augvit.fanout import build_slots, cuda_devices, parser
    if cuda_devices():
        pytest.skip("this machine has a usable GPU")
    args = parser().parse_args(opts)
    with pytest.raises(FanoutError, match=r"torch finds no usable GPU here.*--cpu-slots N"):
        build_slots(args, "auto", 1)
    assert len(build_slots(parser().parse_args([]), "auto", 1)) == 1     # auto: the CPU


def test_a_killed_fanout_leaves_no_process_behind():
    """SIGKILL to the fan-out's process (no handler runs): the guard of each DVC command sees
    its stdin pipe close and ends the command's whole process group, grandchildren included."""
    parent = (
        "import sys, time\n"
        "from augvit.fanout import spawn\n"
        "tree = 'import subprocess, sys, time; subprocess.Popen([sys.executable, \"-c\", "
        "\"import time; time.sleep(600)\"]); time.sleep(600)'\n"
        "p = spawn([sys.executable, '-c', tree])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n")
    p = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT, env=env(),
                         stdout=subprocess.PIPE, text=True)
    group = int(p.stdout.readline())
    deadline = time.time() + 60
    while len(group_members(group)) < 3:               # guard, child, grandchild
        assert time.time() < deadline, group_members(group)
        time.sleep(0.1)
    p.kill()
    p.wait()
    deadline = time.time() + 30
    while group_members(group):
        assert time.time() < deadline, f"left running: {group_members(group)}"
        time.sleep(0.2)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def test_progress_is_plain_lines_with_time_left_when_not_a_terminal(capsys):
    from augvit.fanout import Progress
    progress = Progress(total=5, slots=2)
    progress.update(running=2, trained_s=60)
    progress.update(running=2, trained_s=None)              # a restored run: not timed
    progress.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["fanout: progress: 1 done, 2 running, 2 left, about 2.0 min left "
                     "(60s per training)",
                     "fanout: progress: 2 done, 2 running, 1 left, about 2.0 min left "
                     "(60s per training)"]


def test_dvc_refuses_a_cut_lock_table_and_accepts_the_emptied_one(tmp_path):
    """The DVC behaviour heal_rwlock relies on, with this DVC: a cut .dvc/tmp/rwlock stops
    `dvc repro` ("Unable to read RWLock-file"); `{}` in its place lets it run."""
    from augvit.fanout import heal_rwlock
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "-q"], cwd=tmp_path, check=True, env=env())
    subprocess.run([*dvc, "stage", "add", "-q", "-n", "s", "-o", "out", "echo x > out"],
                   cwd=tmp_path, check=True, env=env(), capture_output=True)
    lock = tmp_path / ".dvc" / "tmp" / "rwlock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text('{"write": {"/p": {"pi')
    cut = subprocess.run([*dvc, "repro"], cwd=tmp_path, env=env(), capture_output=True,
                         text=True)
    assert cut.returncode and "Unable to read RWLock-file" in cut.stdout + cut.stderr
    heal_rwlock(lock)
    ok = subprocess.run([*dvc, "repro"], cwd=tmp_path, env=env(), capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (tmp_path / "out").read_text() == "x\n"


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
    """--no-train: the moment a training starts (the training stage prints its first epoch:
    its run-cache entry was not on the remote), the command is stopped and the run named.
    The fan-out reads the training stage's own lines, not DVC's."""
    from augvit.fanout import stream
    code = ("import time; print(\"Stage 'train@a-finetuned-24-0' is cached - skipping run\", "
            "flush=True); print('Running stage train@b', flush=True); "
            "print('train: epoch 1/2 loss 2.1', flush=True); time.sleep(60)")
    t0 = time.time()
    with pytest.raises(FanoutError, match=r"a training started \(train: epoch 1/2"):
        stream([sys.executable, "-c", code], no_train=True)
    assert time.time() - t0 < 30
    assert stream([sys.executable, "-c", code.replace("60", "0")], no_train=False) == 0


def test_the_fanout_refuses_a_hostile_params_file_before_any_dvc_command(tmp_path):
    """The fan-out (and the SLURM tasks, which run it) start `dvc repro --single-item`, which
    skips validate and lets DVC delete the outputs a path-like name declares: so the plan is
    made from params.yaml through the strict loader first, even with --steps runs."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["versions"]["../../victim"] = ["hflip"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    r = subprocess.run([sys.executable, "-m", "augvit.fanout", "--params",
                        str(tmp_path / "params.yaml"), "--steps", "runs", "--dry-run"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "invalid version name '../../victim'" in r.stderr and "runs:" not in r.stdout
