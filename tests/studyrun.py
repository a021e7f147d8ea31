"""A tiny study as a real project, for the scale-out tests (fan-out, SLURM).

`origin` is a committed copy of the project with tiny params: 2 versions x 2 seeds. Each test
clones it (one commit: every run records the same code version), and `reference` is the study
as one machine makes it, one run after another: `dvc repro` in a clone, one thread per run (the
fan-out's and the SLURM tasks' per-run setting). Both are made once per session.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import yaml

from conftest import tiny_params
from test_pipeline import env, sh, tiny_project

VERSIONS = ["none", "version_0"]
STUDY = {"study": {"seeds": [0, 1], "versions": VERSIONS, "baseline": VERSIONS[0]}}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
# What a study's results are: every file under these, byte for byte.
RESULTS = ("models", "dvclive", "metrics", "eval", "reports", "plots")

_made: dict[str, Path] = {}


def origin(tmp_path_factory) -> Path:
    """The tiny study's project, committed, with no results (made once per session)."""
    if "origin" not in _made:
        _made["origin"] = tiny_project(tmp_path_factory.mktemp("study"), STUDY,
                                       stale=("dvc.lock", *RESULTS, "recipes",
                                              ".dvc/config.local"))
    return _made["origin"]


def study_params(archive: Path) -> dict:
    """The project's params.yaml with the tiny settings and the tiny study's axes."""
    return tiny_params({"data": {"source": str(archive)}}, STUDY)


def clone(tmp_path_factory, name: str) -> Path:
    src = origin(tmp_path_factory)
    dst = tmp_path_factory.mktemp(name) / "project"
    sh(src.parent, "git", "clone", "-q", str(src), str(dst))
    return dst


def reference(tmp_path_factory) -> Path:
    """The tiny study made by `dvc repro` alone: the trainings one after another with one
    thread each (a fan-out slot's setting), then the rest as the fan-out's last step runs it,
    with the machine's threads (runs record their thread count)."""
    if "reference" not in _made:
        proj = clone(tmp_path_factory, "reference")
        for cmd, extra in ((["dvc", "repro", "--glob", "train@*"], ONE_THREAD),
                           (["dvc", "repro"], {})):
            r = subprocess.run(cmd, cwd=proj, env={**env(), **extra}, capture_output=True,
                               text=True, timeout=900)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        _made["reference"] = proj
    return _made["reference"]


def results(project: Path) -> dict[str, object]:
    """Every result file of a study: relative path -> its bytes. DVC's .gitignore files are
    left out (their line order is the order in which DVC recorded the runs), and so are the
    markers of the tests' pause before a rename (AUGSTUDY_PAUSE_BEFORE_RENAME)."""
    out: dict[str, object] = {}
    for root in RESULTS:
        for f in sorted((project / root).rglob("*")):
            if not f.is_file() or f.name == ".gitignore" or f.suffix == ".paused":
                continue
            out[str(f.relative_to(project))] = without_timings(f, f.read_bytes())
    return out


def without_timings(f: Path, data: bytes) -> bytes:
    """The report's machine data taken out: the run times each train stage measured (where and
    when it ran) and the minutes derived from them; everything else stays, byte for byte."""
    if f.name == "comparison.json":
        analysis = json.loads(data)
        analysis.pop("run_seconds", None)
        return json.dumps(analysis, sort_keys=True).encode()
    if f.name == "comparison.md":
        text = re.sub(r"(, \d+ more runs): about \d+ min of training at the \d+ s a run "
                      r"measured here \(median\)", r"\1", data.decode())
        return re.sub(r"\n## What it cost\n.*?<!-- cost:end -->\n", "", text, flags=re.S).encode()
    return data


def assert_same_study(project: Path, ref: Path) -> int:
    """The two studies' results are identical, file by file; returns how many files."""
    a, b = results(project), results(ref)
    assert set(a) == set(b), f"files differ: only here {sorted(set(a) - set(b))[:10]}, " \
        f"only in the reference {sorted(set(b) - set(a))[:10]}"
    differ = sorted(k for k in a if a[k] != b[k])
    assert not differ, f"{len(differ)} of {len(a)} result files differ: {differ[:10]}"
    assert any(k.endswith(".safetensors") for k in a)
    return len(a)


def dvc_status(project: Path) -> dict:
    return json.loads(sh(project, "dvc", "status", "--json").strip().splitlines()[-1])


def lock_stages(project: Path) -> set[str]:
    return set(yaml.safe_load((project / "dvc.lock").read_text())["stages"])


def pipeline_stages(project: Path) -> set[str]:
    return set(sh(project, "dvc", "stage", "list", "--name-only").split())


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session (as a crash of the machine would end them)."""
    for _ in range(3):
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                pid = int(stat.parent.name)
                if int(fields[3]) == sid and pid != os.getpid():   # field 6 of stat: session
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
        time.sleep(0.2)
