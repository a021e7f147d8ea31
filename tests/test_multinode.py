"""One run over several nodes: only the run's global rank 0 manages its resume folder, under
`srun` Lightning's SLURM environment numbers the processes (without its own requeue), and a
killed two-node run resumes from the project's epoch checkpoint to the uninterrupted model."""
from __future__ import annotations

import re
import signal
import time

import pytest
import torch
import yaml

from augvit.training import cluster_plugins, is_launch_rank_zero, open_resume_dir
from conftest import read_model
from slurmcluster import free_port
from stagerun import finish, stage_cmd, start, wait_for_epoch

LAUNCH_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE",
               "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def launch_env(monkeypatch):
    """A clean slate of launcher variables; returns a setter."""
    import os
    for var in [*LAUNCH_VARS, *(v for v in os.environ if v.startswith("SLURM_"))]:
        monkeypatch.delenv(var, raising=False)
    return lambda **env: [monkeypatch.setenv(k, v) for k, v in env.items()]


def srun_env(procid: int, ntasks: int = 2, job_name: str = "augvit-train") -> dict[str, str]:
    """What `srun --nodes=2 --ntasks-per-node=1` gives task `procid` (one task per node)."""
    return {"SLURM_NTASKS": str(ntasks), "SLURM_NTASKS_PER_NODE": "1",
            "SLURM_NNODES": str(ntasks), "SLURM_JOB_NAME": job_name, "SLURM_JOB_ID": "4242",
            "SLURM_NODELIST": "localhost", "SLURM_PROCID": str(procid), "SLURM_LOCALID": "0",
            "SLURM_NODEID": str(procid)}


@pytest.mark.parametrize("env,zero", [
    ({}, True),                                                     # one process
    ({"LOCAL_RANK": "1"}, False),                                   # Lightning's 2nd process
    ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),                 # node 2's first process
    ({"NODE_RANK": "0", "LOCAL_RANK": "0"}, True),
    ({"GROUP_RANK": "1"}, False),
    ({"RANK": "3", "GROUP_RANK": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}, False),
    ({"RANK": "0", "GROUP_RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}, True),
    (srun_env(1), False),                                           # srun sets no LOCAL_RANK
    (srun_env(0), True),
    (srun_env(1, job_name="bash"), True),       # interactive: Lightning ignores SLURM here
])
def test_only_global_rank_zero_is_rank_zero(launch_env, env, zero):
    launch_env(**env)
    assert is_launch_rank_zero() is zero


@pytest.mark.parametrize("env", [srun_env(1), {"NODE_RANK": "1", "LOCAL_RANK": "0"},
                                 {"RANK": "1", "GROUP_RANK": "1", "LOCAL_RANK": "0",
                                  "LOCAL_WORLD_SIZE": "1"}])
def test_other_ranks_leave_the_resume_folder_alone(launch_env, tmp_path, env):
    """A process that is not global rank 0 reads the folder but never empties or stamps it,
    even when it would not resume from it (here: another run's stamp)."""
    folder = tmp_path / "resume"
    folder.mkdir()
    (folder / "config.json").write_text("another run")
    (folder / "last.ckpt").write_bytes(b"rank 0's checkpoint")
    launch_env(**env)
    assert open_resume_dir(folder, "this run", fresh=False) is False
    assert (folder / "config.json").read_text() == "another run"
    assert (folder / "last.ckpt").read_bytes() == b"rank 0's checkpoint"
    launch_env(**{k: "0" for k in env if k in ("SLURM_PROCID", "NODE_RANK", "RANK",
                                               "GROUP_RANK", "SLURM_NODEID")})
    assert open_resume_dir(folder, "this run", fresh=False) is False      # rank 0 empties it
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    assert (folder / "config.json").read_text() == "this run"


def test_under_srun_lightning_uses_slurm_without_its_requeue(launch_env):
    launch_env(**srun_env(0))
    (env,) = cluster_plugins()
    assert type(env).__name__ == "SLURMEnvironment" and env.auto_requeue is False
    assert env.global_rank() == 0 and env.world_size() == 2
    launch_env(SLURM_JOB_NAME="bash")                    # an interactive allocation
    assert cluster_plugins() == []


def two_nodes(work, params, out, port: int, order=(0, 1), **extra: str) -> list:
    """The train stage as two `srun` tasks on two nodes (here: two processes, gloo), started
    in `order`, a second apart; returned rank 0 first."""
    procs = {}
    for rank in order:
        procs[rank] = start(work, stage_cmd(work, "train", out, params), **srun_env(rank),
                            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                            OMP_NUM_THREADS="1", **extra)
        time.sleep(1)
    return [procs[0], procs[1]]


@pytest.mark.e2e
def test_two_nodes_killed_resume_to_the_uninterrupted_model(work, tmp_path):
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["train"].update(num_nodes=2, devices=1, strategy="ddp", accelerator="cpu")
    params = tmp_path / "two-nodes.yaml"
    params.write_text(yaml.safe_dump(p))
    epochs = p["train"]["epochs"]

    whole = tmp_path / "whole"
    logs = [finish(q, timeout=600) for q in two_nodes(work, params, whole, free_port())]
    assert all(code == 0 for code, _ in logs), logs
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1][1], logs[1][1]
    assert not any("auto-requeueing enabled" in log for _, log in logs)

    cut = tmp_path / "cut"
    ckpt = cut / "resume" / "last.ckpt"
    procs = two_nodes(work, params, cut, free_port(), AUGSTUDY_PAUSE_BEFORE_RENAME="0.3")
    wait_for_epoch(ckpt, procs[0], 2)
    for q in procs:
        q.send_signal(signal.SIGKILL)
        q.communicate()
    # again, rank 1 first: it finds rank 0's checkpoint and must leave the folder as it is
    again = two_nodes(work, params, cut, free_port(), order=(1, 0))
    logs = [finish(q, timeout=600) for q in again]
    assert all(code == 0 for code, _ in logs), logs
    for _, log in logs:
        assert re.search(rf"train: resuming \S+ after epoch [2-5] of {epochs}", log), log
    assert not list(tmp_path.rglob("hpc_ckpt*"))
    a = read_model(whole / "seed0.safetensors")["state_dict"]
    b = read_model(cut / "seed0.safetensors")["state_dict"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
