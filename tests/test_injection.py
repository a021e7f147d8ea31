"""Params values never reach a shell unvalidated: through the real `dvc repro`, `dvc repro
<stage>`, `dvc exp run -S` and `dvc exp run --queue`, a value that is not what its key allows
stops at the `validate` stage, before any stage command that holds it runs.

Each case plants a payload that would create a file named PWNED in the project if a shell ran
it; DVC writes the value into the train and evaluate command lines as it stands."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from test_pipeline import env, run_queue, sh, tiny_project

pytestmark = pytest.mark.e2e

PAYLOAD = "1; touch PWNED #"
NAMED = "study.seeds: got [0, '1; touch PWNED #']; allowed: a non-empty list of distinct whole"


def fails(cwd: Path, *cmd: str) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)
    assert r.returncode != 0, f"{' '.join(cmd)} succeeded:\n{r.stdout}{r.stderr}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return tiny_project(tmp_path_factory.mktemp("inject"), stale=("dvc.lock",))


def planted(project: Path) -> list[Path]:
    return list(project.rglob("PWNED"))


def with_payload(project: Path) -> None:
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["study"]["seeds"] = [0, PAYLOAD]
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def test_dvc_really_writes_the_value_into_a_command_line(project):
    """The premise: without the validate stage, this command would run the payload."""
    with_payload(project)
    try:
        out = sh(project, "dvc", "stage", "list")
    finally:
        sh(project, "git", "checkout", "-q", "params.yaml")
    assert f"train@none-finetuned-24-{PAYLOAD}" in out


@pytest.mark.parametrize("target", [None, f"train@none-finetuned-24-{PAYLOAD}",
                                    "evaluate@none-finetuned-24"])
def test_repro_stops_at_validate(project, target):
    with_payload(project)
    try:
        out = fails(project, "dvc", "repro", *([target] if target else []))
    finally:
        sh(project, "git", "checkout", "-q", "params.yaml")
    assert NAMED in out and "failed to reproduce 'validate'" in out, out
    assert "Running stage 'download'" not in out and not planted(project)


def test_exp_run_set_param_stops_at_validate(project):
    out = fails(project, "dvc", "exp", "run", "-S", f"study.seeds=[0,'{PAYLOAD}']")
    assert NAMED in out and not planted(project), out


def test_queued_experiment_stops_at_validate(project):
    sh(project, "dvc", "exp", "run", "--queue", "-n", "evil", "-S",
       f"study.seeds=[0,'{PAYLOAD}']")
    status = run_queue(project, workers=1, tasks=1, timeout=300)
    assert "Failed" in status, status
    assert NAMED in sh(project, "dvc", "queue", "logs", "evil")
    assert not planted(project)              # the queue works in copies under .dvc/tmp/exps
