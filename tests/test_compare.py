"""The statistics, checked by hand on known inputs."""
from __future__ import annotations

import pytest

from augvit.report import render_markdown, summarize, summary_metrics
from augvit.stats import mean_ci, paired_difference


def test_mean_ci_hand_checked():
    # x = 0.60, 0.62, 0.64: mean 0.62, sample std 0.02, t(0.975, 2) = 4.302653
    # half-width = 4.302653 * 0.02 / sqrt(3) = 0.049683
    r = mean_ci([0.60, 0.62, 0.64])
    assert r["n"] == 3
    assert r["mean"] == pytest.approx(0.62)
    assert r["std"] == pytest.approx(0.02)
    assert r["ci95"][0] == pytest.approx(0.62 - 0.049683, abs=1e-6)
    assert r["ci95"][1] == pytest.approx(0.62 + 0.049683, abs=1e-6)


def test_single_run_has_no_interval():
    assert mean_ci([0.5]) == {"mean": 0.5, "std": None, "n": 1, "ci95": None}
    d = paired_difference({0: 0.5}, {0: 0.4})
    assert d["ci95"] is None and d["significant"] is False


def test_paired_difference_hand_checked():
    # differences: +0.02, +0.03, +0.04 -> mean 0.03, std 0.01,
    # CI = 0.03 +- 4.302653 * 0.01 / sqrt(3) = [0.005159, 0.054841]: excludes 0
    # t = 0.03 / (0.01 / sqrt 3) = 5.196, two-sided p = 0.0351
    a = {0: 0.62, 1: 0.53, 2: 0.74}
    b = {0: 0.60, 1: 0.50, 2: 0.70}
    d = paired_difference(a, b)
    assert d["mean"] == pytest.approx(0.03)
    assert d["ci95"][0] == pytest.approx(0.005159, abs=1e-6)
    assert d["ci95"][1] == pytest.approx(0.054841, abs=1e-6)
    assert d["p_value"] == pytest.approx(0.0351, abs=1e-4)
    assert d["significant"] is True
    # a noisy difference: +0.05, -0.04, +0.01 -> CI includes 0
    noisy = paired_difference({0: 0.65, 1: 0.46, 2: 0.71}, b)
    assert noisy["significant"] is False and noisy["ci95"][0] < 0 < noisy["ci95"][1]


def test_summary_and_report_name_the_baseline_and_the_frozen_effect():
    def run(acc):
        return {"acc": acc, "loss": 1 - acc}
    table = {
        ("version_0", "finetuned"): {0: run(0.60), 1: run(0.50), 2: run(0.70)},
        ("version_1", "finetuned"): {0: run(0.62), 1: run(0.53), 2: run(0.74)},
        ("version_0", "frozen"): {0: run(0.40), 1: run(0.41), 2: run(0.42)},
        ("version_1", "frozen"): {0: run(0.40), 1: run(0.40), 2: run(0.40)},
    }
    s = summarize(table, "version_0")
    assert s["version_1/finetuned"]["acc_diff_vs_baseline"]["significant"] is True
    assert "acc_diff_vs_baseline" not in s["version_0/finetuned"]
    assert s["version_0/frozen"]["acc_diff_frozen_vs_finetuned"]["mean"] == pytest.approx(-0.19)
    md = render_markdown(s, "version_0")
    assert "| version_1 | fine-tuned | 3 | 63.00 |" in md
    assert "+3.00 | [0.52, 5.48] | 0.035 | yes |" in md
    assert "Frozen backbone minus fine-tuned" in md


def test_summary_metrics_are_flat_numbers_per_version_and_backbone():
    def run(acc):
        return {"acc": acc, "loss": 1 - acc}
    table = {
        ("version_0", "finetuned"): {0: run(0.60), 1: run(0.50), 2: run(0.70)},
        ("version_1", "finetuned"): {0: run(0.62), 1: run(0.53), 2: run(0.74)},
        ("version_1", "frozen"): {0: run(0.40), 1: run(0.40), 2: run(0.40)},
    }
    m = summary_metrics(summarize(table, "version_0"))
    assert m["n_seeds"] == 3
    assert set(m["version_0"]["finetuned"]) == {"acc", "acc_low", "acc_high"}
    v1 = m["version_1"]["finetuned"]
    assert set(v1) == {"acc", "acc_low", "acc_high", "diff", "diff_low", "diff_high", "p"}
    assert v1["diff"] == pytest.approx(0.03) and v1["p"] == pytest.approx(0.0351, abs=1e-4)
    assert v1["diff_low"] == pytest.approx(0.00516, abs=1e-5)
    frozen = m["version_1"]["frozen"]                 # no frozen baseline: no diff
    assert "diff" not in frozen and frozen["vs_finetuned"] == pytest.approx(-0.23)
    assert all(isinstance(v, float) for g in (v1, frozen) for v in g.values())
