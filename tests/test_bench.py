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


def test_calibrate_measures_only_the_default_training_step(tmp_path):
    """The figure quoted beside a wall time: the default model's first row, nothing else."""
    out = tmp_path / "cal.json"
    r = subprocess.run([sys.executable, "-m", "bench.bench", "--quick", "--calibrate",
                        "--device", "cpu", "--out", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    assert res["augment"] == {} and "skipped" in res["noop_repro"]
    [step] = res["train_step"]
    assert (step["model"], step["recipe"]) == ("vit-small-32 (default)", "version_1")
    assert step["model_only"] > 0


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


def run_gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench/gpu_check.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_gpu_check_reads_the_nodes_package_list_and_leaves_out_what_it_has(tmp_path):
    """The node's packages come from its own `pip list --format=freeze` (or `pip freeze`),
    given by the user: what it has is not bundled, and its versions pin the rest."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench/gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    listing = tmp_path / "node-packages.txt"
    listing.write_text("# a node\nTorch==2.11.0\nnumpy==2.5.2\nlocal_pkg @ file:///opt/x.whl\n"
                       "-e git+https://example.org/r.git#egg=r\npytest\n")
    assert gpu_check.node_packages(listing) == {"torch", "numpy", "local-pkg", "pytest"}
    assert gpu_check.node_pins(listing) == ["Torch==2.11.0", "numpy==2.5.2"]
    wanted = {w.split("=")[0].rstrip("<>!~") for w in
              gpu_check.needed_here(gpu_check.node_packages(listing))}
    assert "dvc" in wanted and not wanted & {"torch", "numpy", "pytest"}
    r = run_gpu_check("wheels", str(tmp_path / "whl"), str(tmp_path / "missing.txt"))
    assert r.returncode != 0 and "missing.txt" in r.stderr and "pip list --format=freeze" in \
        r.stderr and not (tmp_path / "whl").exists()


def test_gpu_check_bundle_limit_is_an_option():
    """No limit unless one is given; over the given limit the bundle is refused by name."""
    free = run_gpu_check("size", "bench")
    assert free.returncode == 0 and "no limit" in free.stdout, free.stderr
    tight = run_gpu_check("size", "--limit-mib", "0.01", "bench")
    assert tight.returncode != 0 and "over --limit-mib 0.01" in tight.stderr, tight.stderr
    bad = run_gpu_check("size", "--limit-mib", "lots", "bench")
    assert bad.returncode != 0 and "'lots'" in bad.stderr and "Traceback" not in bad.stderr


def test_the_alias_bomb_measure_runs_both_parsers_on_the_same_file(tmp_path):
    """A million values: DVC expands them all; the project's check refuses the file unexpanded,
    by its alias rule, in less memory than DVC took."""
    out = tmp_path / "bomb.json"
    r = subprocess.run([sys.executable, "-m", "bench.alias_bomb", "--levels", "6", "--out",
                        str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    assert res["values"] == 10 ** 6 and res["dvc"]["exit"] == 0
    assert res["check"]["exit"] == 2 and "with its YAML aliases" in res["check"]["output_tail"]
    assert res["check"]["peak_mb"] < res["dvc"]["peak_mb"]
    assert sys.executable not in json.dumps(res)         # no machine's path in a result
