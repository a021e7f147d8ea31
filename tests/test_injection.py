"""Params values never reach a shell unvalidated: through the real `dvc repro`, `dvc repro
<stage>`, `dvc exp run -S` and `dvc exp run --queue`, a value that is not what its key allows
stops at the `validate` stage, before any stage command that holds it runs. `dvc repro
--single-item` and `--downstream` skip `validate`; there the stage's own command line starts
with `--check-params || exit 2`, and the shell exits before it reaches the value.

Each case plants a payload that would create a file named PWNED in the project if a shell ran
it; DVC writes the value into the train and evaluate command lines as it stands."""
from __future__ import annotations

import re
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


# ------------------------------------------------------------------ paths around `validate`
VERSION = "v;touch PWNED;#"
NAMED_VERSION = "versions: invalid version name 'v;touch PWNED;#'"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A project whose data and the baseline's recipe are built with valid params, so the
    stages below have every dependency and DVC really starts their commands."""
    proj = tiny_project(tmp_path_factory.mktemp("bypass"), stale=("dvc.lock",))
    sh(proj, "dvc", "repro", "prepare", "recipe@none")
    return proj


def hostile(project: Path, version: str | None = None, seed: str | None = None) -> None:
    p = yaml.safe_load((project / "params.yaml").read_text())
    if version:
        p["versions"][version] = ["hflip"]
    if seed:
        p["study"]["seeds"] = [0, seed]
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


@pytest.mark.parametrize("how,named", [
    (("--single-item", f"recipe@{VERSION}"), NAMED_VERSION),
    (("--downstream", f"recipe@{VERSION}"), NAMED_VERSION),
    (("--single-item", f"train@none-finetuned-24-{PAYLOAD}"), NAMED),
    (("--downstream", "prepare"), NAMED),
])
def test_a_stage_run_without_validate_still_refuses_the_value_before_the_shell_sees_it(
        built, how, named):
    hostile(built, **({"version": VERSION} if "recipe" in how[1] else {"seed": PAYLOAD}))
    try:
        out = fails(built, "dvc", "repro", *how)
    finally:
        sh(built, "git", "checkout", "-q", "params.yaml")
    # DVC really skipped validate and started a command line that holds the value
    assert "Running stage 'validate'" not in out, out
    assert re.search(r"Running stage '(recipe|train)@", out), out
    assert named in out and "--check-params || exit 2" in out, out
    assert not planted(built), out


@pytest.mark.parametrize("version,kept", [
    ("../victim", False),          # in the workspace: DVC deletes it before the command starts
    ("../.git/victim", True),      # in .git or .dvc: DVC refuses the output path
    ("../.dvc/victim", True),
    ("../../victim", False),       # outside the repository: deleted as well
])
def test_what_dvc_deletes_before_a_stage_that_skips_validate_can_refuse(built, version, kept):
    """docs/security.md, "What DVC itself leaves open": DVC removes a stage's declared outputs
    before its command starts, so under --single-item a version name that is a path costs the
    file it names, in the workspace or outside the repository (the command's own check names
    the version right after), though never one in .git or .dvc (the cache): DVC refuses those.
    Should DVC start refusing such paths, this test fails and the docs can say so."""
    target = (built / "recipes" / f"{version}.json").resolve()
    target.write_text("someone's file")
    hostile(built, version=version)
    try:
        out = fails(built, "dvc", "repro", "--single-item", f"recipe@{version}")
    finally:
        sh(built, "git", "checkout", "-q", "params.yaml")
        kept_now = target.exists()
        target.unlink(missing_ok=True)
    assert kept_now is kept, out
    if not kept:
        assert f"invalid version name '{version}'" in out, out
    assert not planted(built)
