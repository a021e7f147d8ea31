"""The statistics, checked by hand on known inputs."""
from __future__ import annotations

import pytest

from augvit.report import render_environments, render_markdown, summarize, summary_metrics
from augvit.stats import holm, mean_ci, paired_difference


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


def test_a_difference_without_variance_has_no_p_value():
    """Two seeds that happen to differ by the same amount: no evidence, never p = 0."""
    d = paired_difference({0: 0.52, 1: 0.61}, {0: 0.50, 1: 0.59})
    assert d["p_value"] is None and d["significant"] is False and d["zero_variance"] is True
    assert holm([d["p_value"], 0.01]) == [None, 0.01]
    assert "n/a (no variance)" in render_markdown(
        {"x": {"version": "v", "backbone": "finetuned", "train_size": 10,
               "test_acc": {"mean": 0.6, "n": 2, "ci95": [0.5, 0.7]},
               "acc_diff_vs_baseline": {**d, "p_holm": None, "holds_after_holm": False}}}, "none")


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.5])
def test_holm_refuses_a_p_value_that_is_no_probability(bad):
    with pytest.raises(ValueError, match=r"holm: got p-value\(s\) \[(nan|-0.1|1.5)\]"):
        holm([0.01, bad, 0.04])


def table_of(rows: dict) -> tuple[dict, dict]:
    """{(version, backbone): [acc per seed]} -> (table, losses) at one train size (100)."""
    table = {(v, b, 100): {s: {"acc": a} for s, a in enumerate(accs)}
             for (v, b), accs in rows.items()}
    losses = {k: {s: 1 - m["acc"] for s, m in seeds.items()} for k, seeds in table.items()}
    return table, losses


def test_holm_hand_checked():
    # p = 0.01, 0.04, 0.03, 0.005 -> sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1
    # = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06; None stays None
    assert holm([0.01, 0.04, None, 0.03, 0.005]) == pytest.approx(
        [0.03, 0.06, None, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]                       # capped at 1
    assert holm([]) == []


def test_summary_and_report_name_the_baseline_holm_and_the_frozen_effect():
    table, losses = table_of({
        ("none", "finetuned"): [0.60, 0.50, 0.70],
        ("version_1", "finetuned"): [0.62, 0.53, 0.74],      # +3 pp, p = 0.035
        ("version_2", "finetuned"): [0.65, 0.46, 0.71],      # noisy
        ("none", "frozen"): [0.40, 0.41, 0.42],
        ("version_1", "frozen"): [0.40, 0.40, 0.40],
    })
    s = summarize(table, "none", losses)
    d = s["version_1/finetuned/n100"]["acc_diff_vs_baseline"]
    assert d["significant"] is True and d["p_value"] == pytest.approx(0.0351, abs=1e-4)
    # three comparisons with the baseline: version_1 (0.035) is not the smallest p-value
    ps = [g["acc_diff_vs_baseline"]["p_value"] for g in s.values()
          if "acc_diff_vs_baseline" in g]
    assert d["p_holm"] == pytest.approx(holm(ps)[ps.index(d["p_value"])])
    assert d["p_holm"] > 0.05 and d["holds_after_holm"] is False   # not after adjustment
    assert "acc_diff_vs_baseline" not in s["none/finetuned/n100"]
    assert s["none/frozen/n100"]["acc_diff_frozen_vs_finetuned"]["mean"] == pytest.approx(-0.19)
    assert s["none/finetuned/n100"]["test_loss"]["mean"] == pytest.approx(0.4)
    md = render_markdown(s, "none")
    assert "| version_1 | fine-tuned | 100 | 3 | 63.00 |" in md
    assert f"+3.00 | [0.52, 5.48] | 0.035 | {d['p_holm']:.3f} | no |" in md
    assert "Holm-adjusted over all 3 comparisons with none" in md
    assert "Frozen backbone minus fine-tuned" in md


def test_summary_metrics_are_flat_numbers_per_group():
    table, losses = table_of({
        ("version_0", "finetuned"): [0.60, 0.50, 0.70],
        ("version_1", "finetuned"): [0.62, 0.53, 0.74],
        ("version_1", "frozen"): [0.40, 0.40, 0.40],
    })
    m = summary_metrics(summarize(table, "version_0", losses))
    assert m["n_seeds"] == 3
    assert set(m["version_0"]["finetuned"]["n100"]) == {"acc", "acc_low", "acc_high"}
    v1 = m["version_1"]["finetuned"]["n100"]
    assert set(v1) == {"acc", "acc_low", "acc_high", "diff", "diff_low", "diff_high", "p_holm"}
    # the only comparison: Holm leaves its p as it is
    assert v1["diff"] == pytest.approx(0.03) and v1["p_holm"] == pytest.approx(0.0351, abs=1e-4)
    assert v1["diff_low"] == pytest.approx(0.00516, abs=1e-5)
    frozen = m["version_1"]["frozen"]["n100"]                # no frozen baseline: no diff
    assert "diff" not in frozen and frozen["vs_finetuned"] == pytest.approx(-0.23)
    assert all(isinstance(v, float) for g in (v1, frozen) for v in g.values())


def test_the_report_lists_environments_and_says_when_a_study_mixes_them():
    epyc = {"cpu": "AMD EPYC", "cpu_flags": ["avx2"], "precision": "32-true", "torch": "2.14.1"}
    xeon = {**epyc, "cpu": "Intel Xeon", "cpu_flags": ["amx_tile", "avx2"]}
    one = render_environments({"a/seed0": epyc, "a/seed1": dict(epyc)})
    assert "All 2 runs were trained in one environment" in one and "mixes" not in one
    mixed = render_environments({"a/seed0": epyc, "a/seed1": xeon, "b/seed0": epyc})
    assert "**This study mixes 2 environments.**" in mixed
    assert "| 2 | AMD EPYC (avx2) |" in mixed and "| 1 | Intel Xeon (amx_tile, avx2) |" in mixed


def test_a_recorded_environment_keeps_only_short_strings():
    from augvit.environment import plain_environment
    got = plain_environment({"cpu": "x" * 10, "cpu_flags": ["avx2"], "evil": {"a": 1},
                             "long": "y" * 1000, 3: "z"})
    assert got == {"cpu": "x" * 10, "cpu_flags": ["avx2"]}
    assert plain_environment("not a dict") == {}
