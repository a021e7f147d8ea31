"""End to end: the real `dvc repro` on a tiny generated archive, then the caching contract.

The project is copied (its git-tracked files) to a temporary folder, pointed at a tiny generated
image-folder archive with tiny params, and run with the real DVC, Lightning and DVCLive.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml

from augvit.predictions import decode_predictions

from conftest import ROOT, make_image_folder, merged, pack, read_model, tiny_params

pytestmark = pytest.mark.e2e


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
             GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    return e


def sh(cwd: Path, *cmd: str) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{out[-4000:]}"
    return out


def ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


def set_params(project: Path, updates: dict) -> None:
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(merged(yaml.safe_load(path.read_text()), updates),
                                   sort_keys=False))


def copy_tracked(dst: Path) -> Path:
    """The project as a clone would have it: git-tracked (and new, unignored) files only."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            (dst / f).write_bytes(src.read_bytes())
    return dst


def tiny_project(tmp: Path, *updates: dict,
                 stale: tuple[str, ...] = ("dvc.lock", "metrics", "reports"),
                 n_train: int = 12) -> Path:
    """The project as a clone has it, in tmp/project: tiny params (then `updates`) on a tiny
    generated archive (`n_train` train and 5 test images per class), the committed results in
    `stale` removed, as a git commit of its own."""
    archive = pack(make_image_folder(tmp / "imgs", n_train=n_train, n_test=5),
                   tmp / "tiny.tar.gz")
    proj = copy_tracked(tmp / "project")
    for name in stale:
        target = proj / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    (proj / "params.yaml").write_text(yaml.safe_dump(
        tiny_params({"data": {"source": str(archive)}}, *updates), sort_keys=False))
    sh(proj, "git", "init", "-q")
    sh(proj, "git", "add", "-A")
    sh(proj, "git", "commit", "-qm", "tiny project")
    return proj


def run_queue(project: Path, workers: int, tasks: int, timeout: float = 600) -> str:
    """`dvc queue start -j workers` until `tasks` queued experiments ended; `dvc queue status`.

    DVC's workers outlive `dvc queue start` (and sometimes hang after their last task, a
    dvc-task shutdown race): they start in their own session, with no pipes to wait on, and
    the whole group is ended once the queue is done."""
    starter = subprocess.Popen(["dvc", "queue", "start", "-j", str(workers)], cwd=project,
                               env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = sh(project, "dvc", "queue", "status")
            if status.count("Success") + status.count("Failed") >= tasks:
                break
            time.sleep(3)
    finally:
        sh(project, "dvc", "queue", "stop")
        try:
            os.killpg(starter.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    return status


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return tiny_project(tmp_path_factory.mktemp("e2e"))


def test_repro_produces_every_output(project):
    out = sh(project, "dvc", "repro")
    versions = ["none", "padcrop_flip", "version_0", "version_1", "version_2"]
    expected = {"validate", "download", "prepare", "compare", "plots"}
    expected |= {f"recipe@{v}" for v in versions}
    expected |= {f"train@{v}-finetuned-24-0" for v in versions}
    expected |= {f"evaluate@{v}-finetuned-24" for v in versions}
    assert ran(out) == expected
    for v in versions:
        m = json.loads((project / f"metrics/runs/{v}/finetuned/n24/seed0.json").read_text())
        assert set(m) == {"acc"} and 0.0 <= m["acc"] <= 1.0
        d = json.loads((project / f"eval/{v}/finetuned/n24/seed0.json").read_text())
        assert d["classes"] == ["cat", "dog", "frog"]
        assert len(decode_predictions(d["predicted"])) == 15
        assert (project / f"eval/{v}/finetuned/n24/seed0.json").stat().st_size < 2000
        assert d["loss"] > 0
        assert (project / f"models/{v}/finetuned/n24/seed0.safetensors").stat().st_size > 1000
        curves = project / f"dvclive/{v}/finetuned/n24/seed0/plots/metrics/val/acc.tsv"
        assert len(curves.read_text().splitlines()) == 3            # header + 2 epochs
        assert (project / f"plots/previews/{v}.png").stat().st_size > 1000
        rows = (project / f"plots/confusion/{v}-finetuned-n24.csv").read_text().splitlines()
        assert rows[0] == "actual,predicted" and len(rows) == 16     # one row per test image
    curves = json.loads((project / "plots/curves.json").read_text())
    assert {(r["version"], r["epoch"]) for r in curves} == {(v, e) for v in versions
                                                            for e in (1, 2)}
    per_class = json.loads((project / "plots/per_class.json").read_text())
    assert len(per_class) == 15 and {r["class"] for r in per_class} == {"cat", "dog", "frog"}
    assert "version_1" in (project / "reports/comparison.md").read_text()
    for png in ("curves.png", "comparison.png", "size_effect.png"):
        assert (project / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    html = sh(project, "dvc", "plots", "show")
    assert "dvc_plots/index.html" in html
    page = (project / "dvc_plots/index.html").read_text()
    template = (project / ".dvc/plots/offline.html").read_text()     # Vega's scripts hold one
    assert page.count("<img") - template.count("<img") == 8    # 3 pictures + 5 previews


def metric_columns(project: Path) -> dict[str, float]:
    """Every numeric metric, as `dvc exp show` makes a column of it: 'file:key.key'."""
    def leaves(prefix: str, node) -> dict:
        if isinstance(node, dict):
            return {k: v for key, child in node.items()
                    for k, v in leaves(f"{prefix}.{key}" if prefix else key, child).items()}
        return {prefix: node} if isinstance(node, (int, float)) else {}
    shown = json.loads(sh(project, "dvc", "metrics", "show", "--json"))
    files = shown[next(iter(shown))]["data"] if "data" not in shown else shown["data"]
    return {f"{f}:{k}": v for f, d in files.items() for k, v in leaves("", d["data"]).items()}


def test_metrics_are_a_few_flat_numbers_per_run_and_version(project):
    cols = metric_columns(project)
    versions = ["none", "padcrop_flip", "version_0", "version_1", "version_2"]
    # a run's own accuracy is an output `dvc metrics show metrics/runs/...` reads on request,
    # not a column: the table keeps the summary's columns at any number of seeds
    assert not {c for c in cols if c.startswith("metrics/runs/")}
    shown = sh(project, "dvc", "metrics", "show", "metrics/runs/version_0/finetuned/n24")
    assert "seed0.json" in shown and "acc" in shown
    summary = {c.split(":", 1)[1] for c in cols if c.startswith("metrics/summary.json")}
    # one seed: no intervals, no p-values; the baseline has no difference to itself
    assert summary == {"n_seeds", "contrasts.grayscale.finetuned.n24.diff"} | \
        {f"{v}.finetuned.n24.{k}" for v in versions for k in ("acc", "diff")
         if (v, k) != ("none", "diff")}
    assert len(cols) == 11


def test_plots_are_data_series_dvc_draws(project):
    """Curves and per-class bars through the project's templates, confusion through DVC's:
    vega specs, which VS Code, Studio and `dvc plots diff` render and overlay."""
    shown = json.loads(sh(project, "dvc", "plots", "show", "--json"))
    assert not shown.get("errors"), shown["errors"]
    data = shown["data"]
    for name, y in (("val_acc", "val_acc"), ("val_loss", "val_loss"), ("per_class_acc", "class")):
        (spec,) = data[name]
        assert spec["type"] == "vega"
        rows = spec["content"]["data"]["values"]
        assert {r["version"] for r in rows} == {"none", "padcrop_flip", "version_0", "version_1",
                                                "version_2"}
        assert all(y in r for r in rows)
    for v in ("none", "padcrop_flip", "version_0", "version_1", "version_2"):
        (spec,) = data[f"plots/confusion/{v}-finetuned-n24.csv"]
        assert spec["type"] == "vega" and len(spec["content"]["data"]["values"]) == 15
    assert {k for k in data if k.endswith(".png")} >= {"plots/curves.png", "plots/comparison.png"}


def test_second_repro_runs_nothing(project):
    out = sh(project, "dvc", "repro")
    assert ran(out) == set()
    assert "up to date" in out.lower()


def test_exp_grayscale_off_retrains_only_version_1(project):
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "baseline results")
    model = project / "models/version_1/finetuned/n24/seed0.safetensors"
    before = safetensors.torch.load_file(model)
    out = sh(project, "dvc", "exp", "run", "-S", "aug.grayscale=false")
    trained = {s for s in ran(out) if s.startswith(("train@", "evaluate@"))}
    assert trained == {"train@version_1-finetuned-24-0", "evaluate@version_1-finetuned-24"}
    after = safetensors.torch.load_file(model)
    assert any(not torch.equal(before[k], after[k]) for k in before), "the same weights"
    # 15 test images: the accuracy may land on the same fraction, but only version_1 may move
    diff = json.loads(sh(project, "dvc", "metrics", "diff", "--json"))
    changed = {f"{f}:{k}" for f, keys in diff.items() for k in keys}
    assert all(c.startswith(("metrics/runs/version_1/", "metrics/summary.json:version_1.",
                             "metrics/summary.json:contrasts.grayscale."))
               for c in changed), changed
    recipe = json.loads((project / "recipes/version_1.json").read_text())
    assert "grayscale" not in recipe["ops"]


def test_new_version_trains_only_itself(project):
    """A DeiT-style version (every new op, batch mixing included) through the real pipeline."""
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["versions"]["deit"] = ["pad_crop", "hflip", "rand_augment", "erasing", "mixup", "cutmix"]
    raw["study"]["versions"].append("deit")
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out = sh(project, "dvc", "repro")
    trained = {s for s in ran(out) if s.startswith(("train@", "evaluate@"))}
    assert trained == {"train@deit-finetuned-24-0", "evaluate@deit-finetuned-24"}
    assert (project / "plots/previews/deit.png").exists()
    recipe = json.loads((project / "recipes/deit.json").read_text())["ops"]
    assert list(recipe) == ["hflip", "pad_crop", "rand_augment", "erasing", "mixup", "cutmix"]
    m = json.loads((project / "metrics/runs/deit/finetuned/n24/seed0.json").read_text())
    assert 0 <= m["acc"] <= 1


def test_plot_setting_retrains_nothing(project):
    set_params(project, {"plots": {"preview_draws": 3}})
    out = sh(project, "dvc", "repro")
    assert ran(out) == {"validate", "plots"}      # validate checks every params change


def test_queue_runs_experiments_in_parallel_workers(project):
    """`dvc exp run --queue` + `dvc queue start -j 2`: DVC's own scheduler, no home-made one."""
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "state before queueing")
    sh(project, "dvc", "exp", "run", "--queue", "-n", "q-crop-only", "-S",
       "versions.version_0=[crop]")
    sh(project, "dvc", "exp", "run", "--queue", "-n", "q-flip-only", "-S",
       "versions.version_2=[hflip]")
    status = run_queue(project, workers=2, tasks=2)
    assert status.count("Success") == 2, status
    shown = json.loads(sh(project, "dvc", "exp", "show", "--json"))
    names = {e.get("name") for rev in shown for e in (rev.get("experiments") or [])}
    assert {"q-crop-only", "q-flip-only"} <= names, names


def test_remote_shares_cache_and_results(project, tmp_path):
    """A local-folder DVC remote: push here, `dvc repro --pull` in a fresh clone reruns nothing."""
    sh(project, "dvc", "remote", "add", "-f", "-d", "store", str(tmp_path / "remote"))
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "remote")
    sh(project, "dvc", "push")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    out = sh(clone, "dvc", "repro", "--pull")
    assert ran(out) == set(), out
    assert (clone / "models/deit/finetuned/n24/seed0.safetensors").stat().st_size > 1000
    assert (clone / "plots/curves.png").exists()


def test_new_seed_trains_only_that_seed(project):
    set_params(project, {"study": {"seeds": [0, 1]}})
    out = sh(project, "dvc", "repro")
    trained = {s for s in ran(out) if s.startswith(("train@", "evaluate@"))}
    versions = ["none", "padcrop_flip", "version_0", "version_1", "version_2", "deit"]
    # the new seed's trainings only; each group's evaluation (one process) includes it
    assert trained == {f"train@{v}-finetuned-24-1" for v in versions} | \
        {f"evaluate@{v}-finetuned-24" for v in versions}
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert summary["n_seeds"] == 2 and "diff_low" in summary["version_1"]["finetuned"]["n24"]


def test_dvc_repro_killed_mid_training_resumes(tmp_path):
    """`dvc repro` killed (the whole process group, as Ctrl-C in a terminal would reach it, but
    with SIGKILL) once a run's epoch checkpoint holds epoch 2 of 6: the next `dvc repro` resumes
    that run after the checkpointed epoch, and the model equals a fresh, uninterrupted run's."""
    from stagerun import checkpoint_epochs

    proj = tiny_project(tmp_path, {"train": {"epochs": 6}, "study": {"train_sizes": [90]},
                                   "model": {"hidden_size": 96, "num_layers": 3,
                                             "num_heads": 3}}, n_train=40)
    stage = "train@version_0-finetuned-90-0"
    ckpt = proj / ".resume/version_0/finetuned/n90/seed0/last.ckpt"
    p = subprocess.Popen(["dvc", "repro", stage], cwd=proj, env=env(), start_new_session=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (ckpt.exists() and checkpoint_epochs(ckpt) >= 2):
        assert p.poll() is None, p.communicate()[0]
        assert time.time() < deadline, "no epoch checkpoint appeared"
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()
    done = checkpoint_epochs(ckpt)
    assert 2 <= done < 6, done
    out = sh(proj, "dvc", "repro", stage)
    assert f"after epoch {done} of 6" in out, out
    assert re.findall(r"train: epoch (\d+)/6", out) == [str(e) for e in range(done + 1, 7)]
    model = proj / "models/version_0/finetuned/n90/seed0.safetensors"
    resumed = read_model(model)["state_dict"]
    out = sh(proj, "dvc", "repro", "-f", "-s", stage)            # fresh, uninterrupted
    assert "resuming" not in out and "train: epoch 1/6" in out, out
    fresh = read_model(model)["state_dict"]
    assert all(torch.equal(v, fresh[k]) for k, v in resumed.items())
