"""The SLURM job scripts (slurm/) on a real scheduler: a single-node cluster started here
(tests/slurmcluster.py), the project's own submit.sh with a tiny study and a local DVC remote;
the gathered study must equal the one `dvc repro` makes on one machine."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from augvit.cluster import uncommitted_inputs
from augvit.fanout import run_stages
from augvit.params import load_params
from slurmcluster import Cluster, missing_requirements
from studyrun import (assert_same_study, clone, dvc_status, lock_stages, pipeline_stages,
                      reference)
from test_pipeline import env, sh

DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
        "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def test_check_names_uncommitted_inputs_only(tmp_path_factory):
    """submit.sh refuses a workspace whose inputs differ from HEAD (the tasks check out HEAD);
    changed outputs and files no stage reads are fine."""
    proj = clone(tmp_path_factory, "check")
    assert uncommitted_inputs(proj) == []
    (proj / "augvit" / "io.py").write_text((proj / "augvit" / "io.py").read_text() + "# x\n")
    (proj / "notes.txt").write_text("not an input")
    (proj / "metrics").mkdir(exist_ok=True)
    (proj / "metrics" / "summary.json").write_text("{}")       # an output
    params = (proj / "params.yaml").read_text()
    (proj / "params.yaml").write_text(params.replace("epochs: 2", "epochs: 3"))
    assert uncommitted_inputs(proj) == ["augvit/io.py", "params.yaml"]
    r = subprocess.run([sys.executable, "-m", "augvit.cluster", "check"], cwd=proj, env=env(),
                       capture_output=True, text=True)
    assert r.returncode == 1 and "augvit/io.py" in r.stderr and "Commit them" in r.stderr


@pytest.fixture(scope="module")
def cluster():
    why = missing_requirements()
    if why:
        pytest.skip(why)
    c = Cluster(cpus=2).start()
    try:
        yield c
    finally:
        c.stop()


def wait_for(cluster: Cluster, jobs: dict[str, str], expected: int,
             timeout: float = 900) -> dict[str, str]:
    """Every job's (and array task's) final state, once all `expected` of them are done."""
    deadline = time.time() + timeout
    while True:
        states = {k: v for job in jobs.values() for k, v in cluster.job_states(job).items()}
        if len(states) >= expected and set(states.values()) <= DONE:
            return states
        if any(v in DONE - {"COMPLETED"} for v in states.values()) or time.time() > deadline:
            time.sleep(2)                          # let the rest settle, for the report
            return {k: v for job in jobs.values() for k, v in cluster.job_states(job).items()}
        time.sleep(2)


@pytest.mark.e2e
def test_job_array_and_gather_equal_one_machine(cluster, tmp_path_factory):
    """prepare, a 3-task array (each task: its own checkout, its slice of the 4 runs, a push
    to the remote), gather (pull, restore every training from the run-cache, evaluate, compare,
    plot): all COMPLETED, no training in the gather job, and the study equals one machine's.
    Each task asks for a GPU (--gres=gpu:1 of the node's two stand-in GPUs): SLURM gives each
    its own device in CUDA_VISIBLE_DEVICES (the trainings themselves run on CPU slots)."""
    ref = reference(tmp_path_factory)
    proj = clone(tmp_path_factory, "slurm")
    remote = proj.parent / "remote"
    settings = {"TASKS": "3", "GPUS_PER_TASK": "1", "CPUS_PER_TASK": "1", "TIME": "00:30:00",
                "FANOUT": "--cpu-slots 1 --threads 1", "VENV": sys.prefix,
                "REMOTE": str(remote), "SCRATCH_DIR": str(proj.parent / "scratch")}
    out = cluster.run("bash", "slurm/submit.sh", env={**env(), **settings}, cwd=proj)
    jobs = dict(re.findall(r"(prepare|train|gather)=(\d+)", out))
    assert set(jobs) == {"prepare", "train", "gather"}, out
    states = wait_for(cluster, jobs, expected=5)
    logs = proj / ".dvc" / "tmp" / "slurm" / "logs"
    print(f"SLURM jobs {jobs}: {states}")
    report = "".join(f"\n--- {f.name}\n{f.read_text(errors='replace')[-3000:]}"
                     for f in sorted(logs.glob("*.out")))
    assert sorted(states) == sorted([jobs["prepare"], jobs["gather"]] +
                                    [f"{jobs['train']}_{i}" for i in range(3)]), states
    assert set(states.values()) == {"COMPLETED"}, f"{states}{report}{cluster.logs()}"

    trained, devices = {}, {}
    for i in range(3):
        text = (logs / f"augvit-train-{jobs['train']}_{i}.out").read_text()
        trained[i] = re.findall(r"\] (train@\S+) trained", text)
        devices[i] = re.findall(r"GPUs: CUDA_VISIBLE_DEVICES=(\S*)\)", text)
    assert all(d in (["0"], ["1"]) for d in devices.values()), devices
    assert {d[0] for d in devices.values()} == {"0", "1"}, devices     # two at a time
    assert sorted(s for t in trained.values() for s in t) == \
        sorted(s for s in pipeline_stages(proj) if s.startswith("train@")), trained
    gather = (logs / f"augvit-gather-{jobs['gather']}.out").read_text()
    assert "Running stage 'train@" not in gather, gather
    assert len(re.findall(r"Stage 'train@\S+' is cached - skipping run", gather)) == 4, gather
    scratch = proj.parent / "scratch"           # no checkout left, no epoch checkpoint
    assert not scratch.exists() or {p.name for p in scratch.iterdir()} <= {"resume"}
    assert not [f for f in scratch.rglob("*") if f.is_file()]

    assert dvc_status(proj) == {}
    assert lock_stages(proj) == pipeline_stages(proj)
    files = assert_same_study(proj, ref)
    print(f"SLURM study equals one machine's: {files} result files identical; "
          f"trained per task: {trained}")
    # the remote holds everything: a fresh clone reproduces the study without training
    fresh = proj.parent / "fresh"
    sh(proj.parent, "git", "clone", "-q", str(proj), str(fresh))
    sh(fresh, "dvc", "remote", "add", "-d", "store", str(remote))
    pulled = sh(fresh, "dvc", "repro", "--pull", "--glob", "train@*")
    assert "Running stage 'train@" not in pulled, pulled
    assert os.listdir(fresh / "models")


@pytest.mark.e2e
def test_one_training_over_srun_tasks_is_recorded_by_dvc(cluster, tmp_path_factory):
    """slurm/multinode.sbatch under a real `srun`: two tasks (here on the one node) train one
    run with DDP, numbered by Lightning's SLURM environment (srun sets no LOCAL_RANK); DVC
    records it, so `dvc repro` then finds it up to date."""
    proj = clone(tmp_path_factory, "srun")
    params = (proj / "params.yaml").read_text()
    params = re.sub(r"(?m)^(  devices:) 1$", r"\1 2", params)
    params = re.sub(r"(?m)^(  strategy:) auto$", r"\1 ddp", params)
    (proj / "params.yaml").write_text(params)
    sh(proj, "git", "commit", "-qam", "two processes per run")
    stage = "train@none-finetuned-24-0"
    out = cluster.run("sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--gres=none",
                      "--cpus-per-task=1", "--time=00:20:00", "--output=job-%j.out",
                      "slurm/multinode.sbatch", stage, env={**env(), "VENV": sys.prefix},
                      cwd=proj)
    job = out.strip().split(";")[0]
    states = wait_for(cluster, {"multinode": job}, expected=1)
    log = (proj / f"job-{job}.out").read_text(errors="replace")
    print(f"SLURM multinode job {job}: {states}")
    assert states == {job: "COMPLETED"}, log[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log and "GLOBAL_RANK: 0, MEMBER: 1/2" in log, log
    assert "auto-requeueing enabled" not in log
    assert dvc_status(proj).keys() <= {s for s in pipeline_stages(proj) if s != stage}
    again = sh(proj, "dvc", "repro", "-s", stage)
    assert "didn't change" in again and "Running stage" not in again, again


def task_log(proj: Path, train_job: str, task: int) -> str:
    log = proj / ".dvc" / "tmp" / "slurm" / "logs" / f"augvit-train-{train_job}_{task}.out"
    return log.read_text(errors="replace") if log.exists() else ""


def resume_path(stage: str) -> Path:
    """train@<version>-<backbone>-<size>-<seed> -> its folder under the resume folder."""
    version, backbone, size, seed = stage.split("@", 1)[1].rsplit("-", 3)
    return Path(version) / backbone / f"n{size}" / f"seed{seed}"


def training_pid(resume: Path) -> int | None:
    """The running training stage's process of one run (its --resume-dir names the run)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"stages.train" in args and \
                f".resume/{resume.as_posix()}".encode() in args:
            return int(cmdline.parent.name)
    return None


def wait_all(cluster: Cluster, keys: list[str], job: str, timeout: float = 900) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = cluster.job_states(job)
        if all(states.get(k) in DONE for k in keys):
            return states
        time.sleep(2)
    raise AssertionError(f"not done in {timeout}s: {cluster.job_states(job)}")


@pytest.mark.e2e
def test_failed_and_timed_out_tasks_lose_nothing_and_a_resubmission_resumes(
        cluster, tmp_path_factory):
    """Two array tasks of two trainings each (paths with spaces). Task 0's second training
    fails: its first is on the remote all the same. Task 1's second training is stopped by its
    time limit after an epoch (frozen, then the job's limit shortened: SLURM's warning signal,
    B:TERM, reaches the task, which stops and pushes). Submitted again, only those two train,
    the stopped one resuming after its epoch checkpoint; the first two are restored."""
    proj = clone(tmp_path_factory, "slurm faults")
    params = (proj / "params.yaml").read_text()
    (proj / "params.yaml").write_text(params.replace("epochs: 2", "epochs: 30"))
    sh(proj, "git", "commit", "-qam", "longer trainings")
    slices = [run_stages(load_params(proj / "params.yaml"), (i, 2)) for i in range(2)]
    assert all(len(s) == 2 for s in slices), slices
    scratch = proj.parent / "scratch dir"
    broken = scratch / "resume" / resume_path(slices[0][1])
    broken.parent.mkdir(parents=True)
    broken.write_text("a file where the run's resume folder goes: its training fails")
    settings = {"TASKS": "2", "GPUS_PER_TASK": "0", "CPUS_PER_TASK": "1", "TIME": "00:10:00",
                "SIGNAL_LEAD": "240", "FANOUT": "--cpu-slots 1 --threads 1",
                "VENV": sys.prefix, "REMOTE": str(proj.parent / "remote store"),
                "SCRATCH_DIR": str(scratch)}
    out = cluster.run("bash", "slurm/submit.sh", env={**env(), **settings}, cwd=proj)
    jobs = dict(re.findall(r"(prepare|train|gather)=(\d+)", out))
    train = jobs["train"]

    frozen = resume_path(slices[1][1])
    deadline = time.time() + 600
    while not (scratch / "resume" / frozen / "last.ckpt").exists():
        assert time.time() < deadline, task_log(proj, train, 1)
        assert cluster.job_states(f"{train}_1").get(f"{train}_1") not in DONE, \
            task_log(proj, train, 1)
        time.sleep(0.05)
    pid = training_pid(frozen)
    assert pid, "the training's process was not found"
    os.kill(pid, signal.SIGSTOP)                     # mid-training, after an epoch
    elapsed = cluster.run("squeue", "-h", "-j", f"{train}_1", "-o", "%M").strip()
    minutes = int(elapsed.split(":")[-2]) if elapsed.count(":") else 0
    cluster.run("scontrol", "update", f"JobId={train}_1", f"TimeLimit={minutes + 3}")
    states = wait_all(cluster, [f"{train}_0", f"{train}_1"], train)
    first = {i: task_log(proj, train, i) for i in range(2)}
    print(f"first submission {jobs}: {states}\n" + "\n".join(first.values()))
    assert states[f"{train}_0"] == "FAILED" and states[f"{train}_1"] == "FAILED", states
    assert f"{slices[0][0]} pushed to the DVC remote" in first[0], first[0]
    assert f"{slices[0][1]} FAILED" in first[0] and "FAILED (exit 1)" in first[0], first[0]
    assert f"{slices[1][0]} pushed to the DVC remote" in first[1], first[1]
    assert "SIGTERM from SLURM" in first[1] and "stopped by SLURM" in first[1], first[1]
    assert (scratch / "resume" / frozen / "last.ckpt").exists()

    broken.unlink()
    out = cluster.run("bash", "slurm/submit.sh", env={**env(), **settings}, cwd=proj)
    again = dict(re.findall(r"(prepare|train|gather)=(\d+)", out))
    states = wait_for(cluster, again, expected=4)
    second = {i: task_log(proj, again["train"], i) for i in range(2)}
    print(f"resubmission {again}: {states}\n" + "\n".join(second.values()))
    assert set(states.values()) == {"COMPLETED"}, (states, second)
    trained = {s for text in second.values()
               for s in re.findall(r"\] (train@\S+) trained", text)}
    assert trained == {slices[0][1], slices[1][1]}, second        # nothing finished retrained
    for stage in (slices[0][0], slices[1][0]):
        assert f"{stage} up to date / restored" in "".join(second.values()), second
    assert re.search(rf"{re.escape(slices[1][1])} trained \(resumed after epoch [1-9]\d* "
                     r"of 30\) in \d+s", second[1]), second[1]
    assert dvc_status(proj) == {}


@pytest.mark.e2e
def test_a_shared_cache_links_the_data_instead_of_copying_it(cluster, tmp_path_factory):
    """One task, the study trained once with a cache of its own (CACHE_DIR=none: the data
    pulled and copied into the task's checkout) and once with the project's cache shared
    (the default): the bytes copied into the task's checkout, as the task logs them."""
    copied = {}
    for cache in ("none", ""):
        proj = clone(tmp_path_factory, f"cache {cache or 'shared'}")
        settings = {"TASKS": "1", "GPUS_PER_TASK": "0", "CPUS_PER_TASK": "2",
                    "TIME": "00:20:00", "FANOUT": "--cpu-slots 2 --threads 1",
                    "VENV": sys.prefix, "REMOTE": str(proj.parent / "remote"),
                    "SCRATCH_DIR": str(proj.parent / "scratch"), "CACHE_DIR": cache}
        out = cluster.run("bash", "slurm/submit.sh", env={**env(), **settings}, cwd=proj)
        jobs = dict(re.findall(r"(prepare|train|gather)=(\d+)", out))
        states = wait_for(cluster, jobs, expected=3)
        log = task_log(proj, jobs["train"], 0)
        assert set(states.values()) == {"COMPLETED"}, f"{states}\n{log[-6000:]}"
        copied[cache or "shared"] = int(re.search(r"not links\): (\d+)", log)[1])
    print(f"bytes copied into the task's checkout: {copied}")
    assert copied["shared"] < copied["none"], copied
