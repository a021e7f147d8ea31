"""The statistics, checked by hand on known inputs."""
from __future__ import annotations

import pytest

import numpy as np

from augvit.markdown import READING_END, READING_START, render_environments, render_report
from augvit.report import summarize, summary_metrics
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
    table, _ = table_of({("none", "finetuned"): [0.50, 0.59],
                         ("v", "finetuned"): [0.52, 0.61]})
    a = summarize(table, "none")
    md = render_report(a)
    assert "n/a (no variance)" in md
    assert "every seed gave the same difference (+2.00 pp): no spread to test" in md


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
    a = summarize(table, "none", losses)
    s = a["groups"]
    d = s["version_1/finetuned/n100"]["acc_diff_vs_baseline"]
    assert d["significant"] is True and d["p_value"] == pytest.approx(0.0351, abs=1e-4)
    # three comparisons with the baseline: version_1 (0.035) is not the smallest p-value
    ps = [c["diff"]["p_value"] for c in a["comparisons"]]
    assert a["family_size"] == 3 and len(ps) == 3
    assert d["p_holm"] == pytest.approx(holm(ps)[ps.index(d["p_value"])])
    assert d["p_holm"] > 0.05 and d["holds_after_holm"] is False   # not after adjustment
    assert "acc_diff_vs_baseline" not in s["none/finetuned/n100"]
    assert s["none/frozen/n100"]["acc_diff_frozen_vs_finetuned"]["mean"] == pytest.approx(-0.19)
    assert s["none/finetuned/n100"]["test_loss"]["mean"] == pytest.approx(0.4)
    md = render_report(a)
    assert "| version_1 | fine-tuned | 100 | 3 | 63.00 |" in md
    assert f"+3.00 | [0.52, 5.48] | 0.035 | {d['p_holm']:.3f} | cannot tell |" in md
    assert "Holm-adjusted over the family of all 3 comparisons" in md
    assert "Frozen backbone minus fine-tuned" in md
    # the primary analysis comes before any result
    assert md.index("## Primary analysis") < md.index(READING_START) < md.index("| version |")


def test_contrasts_join_the_holm_family_and_the_report():
    table, _ = table_of({
        ("none", "finetuned"): [0.60, 0.50, 0.70, 0.55],
        ("version_1", "finetuned"): [0.62, 0.53, 0.74, 0.58],
        ("version_2", "finetuned"): [0.65, 0.52, 0.71, 0.56],
    })
    a = summarize(table, "none", contrasts={"grayscale": ("version_1", "version_2")})
    assert a["family_size"] == 3
    c = next(c for c in a["comparisons"] if c["kind"] == "contrast")
    assert c["name"] == "grayscale" and (c["a"], c["b"]) == ("version_1", "version_2")
    # 0.62-0.65, 0.53-0.52, 0.74-0.71, 0.58-0.56 -> -0.03, +0.01, +0.03, +0.02: mean +0.0075
    assert c["diff"]["mean"] == pytest.approx(0.0075)
    ps = [x["diff"]["p_value"] for x in a["comparisons"]]
    assert c["diff"]["p_holm"] == pytest.approx(holm(ps)[2])
    m = summary_metrics(a)
    assert m["contrasts"]["grayscale"]["finetuned"]["n100"]["diff"] == pytest.approx(0.0075)
    md = render_report(a)
    assert "| grayscale | version_1 - version_2 | fine-tuned | 100 | +0.75 |" in md
    reading = md[md.index(READING_START):md.index(READING_END)]
    assert "- **grayscale: cannot tell.**" in reading and "version_1 - none" in reading


def test_power_and_verdicts_follow_the_stated_rules():
    """A clear, well-powered gain helps; the same mean from noisy seeds cannot tell."""
    rng = np.random.default_rng(0)
    base = 0.5 + rng.normal(0, 0.02, 12)
    table, _ = table_of({("none", "finetuned"): list(base),
                         ("clear", "finetuned"): list(base + 0.03 + rng.normal(0, 0.003, 12)),
                         ("noisy", "finetuned"): list(base + 0.03 + rng.normal(0, 0.05, 12))})
    a = summarize(table, "none", target=0.01)
    got = {c["a"]: c for c in a["comparisons"]}
    assert got["clear"]["verdict"]["verdict"] == "helps"
    assert got["clear"]["power"]["at_target"] > 0.8 and got["clear"]["power"]["seeds_needed"] <= 12
    assert got["noisy"]["verdict"]["verdict"] == "cannot tell"
    assert got["noisy"]["power"]["seeds_needed"] > 12
    assert "| clear - none | 0.3" in render_report(a)        # SD of the differences, pp


def test_the_seed_and_image_interval_is_reported_with_per_image_results():
    rng = np.random.default_rng(1)
    table, _ = table_of({("none", "finetuned"): [0.5, 0.52, 0.49],
                         ("v", "finetuned"): [0.53, 0.54, 0.52]})
    correct = {("none", "finetuned", 100): (rng.random((3, 200)) < 0.5).astype(float),
               ("v", "finetuned", 100): (rng.random((3, 200)) < 0.53).astype(float)}
    a = summarize(table, "none", correct=correct)
    images = a["comparisons"][0]["images"]
    assert images["bootstrap"]["ci95"][0] < images["bootstrap"]["ci95"][1]
    assert images["components"]["se"] > 0
    assert "## Seeds and test images" in render_report(a)


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
    assert "| 2 | AMD EPYC (avx2) | ? |" in mixed and "| 1 | Intel Xeon (amx_tile, avx2) |" in mixed


def test_a_recorded_environment_keeps_only_short_strings():
    from augvit.environment import plain_environment
    got = plain_environment({"cpu": "x" * 10, "cpu_flags": ["avx2"], "evil": {"a": 1},
                             "long": "y" * 1000, 3: "z"})
    assert got == {"cpu": "x" * 10, "cpu_flags": ["avx2"]}
    assert plain_environment("not a dict") == {}
