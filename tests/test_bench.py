"""Smoke test: the benchmark runs end to end on tiny sizes and writes its JSON."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT, committed_params_text

pytestmark = pytest.mark.e2e      # subprocesses


def test_benchmark_runs_on_tiny_sizes(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "bench.bench", "--quick", "--no-repro", "--out",
                        str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    assert set(res["augment"]) == {"cpu/version_1/224", "cpu/deit/224", "cpu/deit/32"}
    for aug in res["augment"].values():
        assert aug["notebook_pil_1core"] > 0 and aug["batched_cpu_1thread"] > 0
    assert {t["recipe"] for t in res["train_step"]} == {"version_1", "deit"}
    step = res["train_step"][0]
    assert step["model_only"] > 0 and step["project_path"] > 0 and step["notebook_path"] > 0
    assert "model_only_cpu_bf16_autocast" in step
    assert "augmentation, version_1 recipe" in r.stdout and "training step" in r.stdout


needs_git = pytest.mark.skipif(not (ROOT / ".git").exists(),
                               reason="bench.vs_revision reads git history; this tree has none")


@needs_git
def test_revision_comparison_runs_on_tiny_sizes():
    r = subprocess.run([sys.executable, "-m", "bench.vs_revision", "HEAD", "--sizes", "16",
                        "--rounds", "2", "--batch", "8"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "speed-up" in r.stdout and "16x16" in r.stdout


@needs_git
def test_revision_comparison_names_a_bad_revision():
    r = subprocess.run([sys.executable, "-m", "bench.vs_revision", "no-such-revision"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "no-such-revision" in r.stderr


def test_revision_comparison_refuses_non_positive_sizes():
    r = subprocess.run([sys.executable, "-m", "bench.vs_revision", "HEAD", "--sizes", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--sizes" in r.stderr and "[0]" in r.stderr


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_gpu_check_study_params_are_valid_params(tmp_path, device):
    """The GPU check rewrites params.yaml into the notebook-shaped study; it must stay valid
    under the current schema (a stale key would spend a GPU machine's time on a params error)."""
    import yaml

    from augvit.params import parse_params

    out = tmp_path / "params.yaml"
    out.write_text(committed_params_text())
    subprocess.run([sys.executable, str(ROOT / "bench/gpu_check.py"), "study-params", str(out),
                    device], check=True, capture_output=True)
    p = parse_params(yaml.safe_load(out.read_text()), out)
    assert list(p.study.backbones) == ["frozen"]
    assert p.model.patch_size == 16 and p.model.image_size == 224
    assert p.study.baseline == "none" and len(p.study.seeds) == 1
    assert list(p.study.train_sizes) == ([49000] if device == "cuda" else [512])


def test_gpu_check_takes_versions_from_the_lock_not_from_the_installed_packages():
    """What to carry to the GPU machine comes from pyproject.toml and the lock alone; without
    `packaging` (a Python outside the project's environment) it says so by name."""
    code = ("import sys; sys.path.insert(0, 'bench'); import gpu_check; "
            "print(gpu_check.needed_here())")
    ok = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "==" in ok.stdout, ok.stderr
    bare = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True,
                          text=True)                  # -S: no site-packages, as outside the venv
    assert bare.returncode != 0 and "needs the `packaging` module" in bare.stderr, bare.stderr
    assert "Traceback" not in bare.stderr
