"""Smoke test: the benchmark runs end to end on tiny sizes and writes its JSON."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_benchmark_runs_on_tiny_sizes(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "bench.bench", "--quick", "--no-repro", "--out",
                        str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(out.read_text())
    aug = res["augment"]["cpu"]
    assert aug["notebook_pil_1core"] > 0 and aug["batched_cpu_1thread"] > 0
    step = res["train_step"][0]
    assert step["model_only"] > 0 and step["project_path"] > 0 and step["notebook_path"] > 0
    assert "model_only_cpu_bf16_autocast" in step
    assert "augmentation, version_1 recipe" in r.stdout and "training step" in r.stdout
