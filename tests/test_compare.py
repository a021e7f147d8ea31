"""The statistics and the report, checked by hand on known inputs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from augvit.markdown import READING_END, READING_START, render_environments, render_report
from augvit.report import summarize, summary_metrics
from augvit.stats import mean_ci, paired_difference


def design(n: int, looks: list[int] | None = None, target: float = 0.01,
           spending: str = "pocock") -> dict:
    """A study design for seeds 0..n-1: one look at n unless `looks` says otherwise."""
    return {"seeds": list(range(n)), "looks": looks or [n], "spending": spending,
            "target": target}


def bonferroni_t(mean: float, sd: float, n: int, m: int) -> list[float]:
    """One look: the repeated interval is the Bonferroni t interval, mean +- t sd / sqrt(n)."""
    half = stats.t.isf(0.05 / m / 2, n - 1) * sd / math.sqrt(n)
    return [mean - half, mean + half]


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
    table, _ = table_of({("none", "finetuned"): [0.50, 0.59],
                         ("v", "finetuned"): [0.52, 0.61]})
    a = summarize(table, "none", design(2))
    c = a["comparisons"][0]
    assert c["verdict"] == "not decided yet" and c["diff"]["interval"] is None
    assert "- **v - none: not decided yet.** +2.00 pp, 95% repeated interval n/a" in \
        render_report(a)


def table_of(rows: dict) -> tuple[dict, dict]:
    """{(version, backbone): [acc per seed]} -> (table, losses) at one train size (100)."""
    table = {(v, b, 100): {s: {"acc": a} for s, a in enumerate(accs)}
             for (v, b), accs in rows.items()}
    losses = {k: {s: 1 - m["acc"] for s, m in seeds.items()} for k, seeds in table.items()}
    return table, losses


def test_summary_and_report_name_the_baseline_the_family_and_the_frozen_effect():
    table, losses = table_of({
        ("none", "finetuned"): [0.60, 0.50, 0.70],
        ("version_1", "finetuned"): [0.62, 0.53, 0.74],      # +3 pp, sd 1 pp
        ("version_2", "finetuned"): [0.65, 0.46, 0.71],      # noisy
        ("none", "frozen"): [0.40, 0.41, 0.42],
        ("version_1", "frozen"): [0.40, 0.40, 0.40],
    })
    a = summarize(table, "none", design(3), losses)
    s = a["groups"]
    d = s["version_1/finetuned/n100"]["acc_diff_vs_baseline"]
    assert d["p_value"] == pytest.approx(0.0351, abs=1e-4)       # unadjusted paired t
    # three comparisons with the baseline (two fine-tuned, one frozen): each at 0.05 / 3
    assert a["family_size"] == 3
    assert d["interval"] == pytest.approx(bonferroni_t(0.03, 0.01, 3, 3), abs=1e-6)
    assert d["p_adjusted"] == pytest.approx(min(1, 3 * 0.0351), abs=1e-3)
    assert "acc_diff_vs_baseline" not in s["none/finetuned/n100"]
    assert s["none/frozen/n100"]["acc_diff_frozen_vs_finetuned"]["mean"] == pytest.approx(-0.19)
    assert s["none/finetuned/n100"]["test_loss"]["mean"] == pytest.approx(0.4)
    md = render_report(a)
    lo, hi = (100 * x for x in d["interval"])
    assert "| version_1 | fine-tuned | 100 | 3 | 63.00 |" in md
    assert f"+3.00 | [{lo:+.2f}, {hi:+.2f}] | 0.105 | not decided yet |" in md
    assert "split equally over the family's 3 comparisons (Bonferroni, 0.0167 each)" in md
    assert "Frozen backbone minus fine-tuned" in md
    # the design and the rule come before any result
    assert md.index("## Design and decision rule") < md.index(READING_START) < \
        md.index("| version |")


def test_contrasts_join_the_family_and_the_report():
    table, _ = table_of({
        ("none", "finetuned"): [0.60, 0.50, 0.70, 0.55],
        ("version_1", "finetuned"): [0.62, 0.53, 0.74, 0.58],
        ("version_2", "finetuned"): [0.65, 0.52, 0.71, 0.56],
    })
    a = summarize(table, "none", design(4), contrasts={"grayscale": ("version_1", "version_2")})
    assert a["family_size"] == 3
    c = next(c for c in a["comparisons"] if c["kind"] == "contrast")
    assert c["name"] == "grayscale" and (c["a"], c["b"]) == ("version_1", "version_2")
    # 0.62-0.65, 0.53-0.52, 0.74-0.71, 0.58-0.56 -> -0.03, +0.01, +0.03, +0.02: mean +0.0075
    assert c["diff"]["mean"] == pytest.approx(0.0075)
    sd = float(np.std([-0.03, 0.01, 0.03, 0.02], ddof=1))
    assert c["diff"]["interval"] == pytest.approx(bonferroni_t(0.0075, sd, 4, 3), abs=1e-6)
    m = summary_metrics(a)
    assert m["contrasts"]["grayscale"]["finetuned"]["n100"]["diff"] == pytest.approx(0.0075)
    md = render_report(a)
    assert "| grayscale | version_1 - version_2 | fine-tuned | 100 | +0.75 |" in md
    reading = md[md.index(READING_START):md.index(READING_END)]
    assert "- **grayscale: not decided yet.**" in reading and "version_1 - none" in reading


def test_verdicts_are_read_off_the_intervals_and_an_undecided_one_gets_its_next_step():
    """A clear gain helps by at least the target; an exact tie within a narrow interval is
    equivalent; a small mean from noisy seeds is not decided, and the report names the look
    that would decide it, with the command and the minutes."""
    rng = np.random.default_rng(0)
    base = 0.5 + rng.normal(0, 0.02, 12)
    table, _ = table_of({("none", "finetuned"): list(base),
                         ("clear", "finetuned"): list(base + 0.03 + rng.normal(0, 0.003, 12)),
                         ("same", "finetuned"): list(base + rng.normal(0, 0.003, 12)),
                         ("noisy", "finetuned"): list(base + 0.005 + np.tile([0.03, -0.03], 6))})
    a = summarize(table, "none", design(12, looks=[12, 24, 36]),
                  run_seconds={"median": 30.0, "runs": 48, "devices": ["cpu"]})
    got = {c["a"]: c for c in a["comparisons"]}
    assert got["clear"]["verdict"] == "helps by at least the target"
    assert got["same"]["verdict"] == "equivalent within the target"
    assert got["noisy"]["verdict"] == "not decided yet"
    assert "plan" in got["noisy"] and "plan" not in got["clear"]
    md = render_report(a)
    assert "- **clear - none: helps by at least 1.00 pp.**" in md
    assert "- **same - none: equivalent within 1.00 pp.**" in md
    plan = got["noisy"]["plan"]
    if plan["seeds"] is not None:      # the noisy SD drives the pooled planning SD up
        more = plan["seeds"] - 12
        seeds = ",".join(map(str, range(plan["seeds"])))
        assert f"`dvc exp run -S 'study.seeds=[{seeds}]'`" in md
        assert f"about {more * 4 * 30 / 60:.0f} min of training" in md
    else:
        assert "Even at the design's last look (36 seeds)" in md


def test_the_scale_out_tests_read_a_report_with_run_times_as_one_without():
    """The fan-out and SLURM tests compare a study against one machine's byte for byte, less
    the run times (a cluster's gather job has none of its own): with and without them, and with
    an environments table after the cost section, the reports must then read alike, and a
    changed verdict must still show."""
    from studyrun import without_timings
    rng = np.random.default_rng(1)
    base = 0.5 + rng.normal(0, 0.02, 6)
    table, _ = table_of({("none", "finetuned"): list(base),
                         ("noisy", "finetuned"): list(base + np.tile([0.03, -0.02], 3))})
    timed = summarize(table, "none", design(6, looks=[6, 12]),
                      run_seconds={"median": 30.0, "runs": 12, "devices": ["cpu"]})
    untimed = summarize(table, "none", design(6, looks=[6, 12]))
    assert "## What it cost" in render_report(timed)
    for envs in (None, {"none/0": {"device": "cpu"}}):
        a, b = (without_timings(Path("comparison.md"), render_report(x, envs).encode())
                for x in (timed, untimed))
        assert a == b
    other = summarize(table, "noisy", design(6, looks=[6, 12]))
    assert without_timings(Path("comparison.md"), render_report(other).encode()) != b


def test_every_look_is_read_from_the_first_seeds_in_params_order():
    table, _ = table_of({("none", "finetuned"): [0.5] * 8,
                         ("v", "finetuned"): [0.52, 0.53, 0.51, 0.52, 0.60, 0.40, 0.61, 0.39]})
    a = summarize(table, "none", design(8, looks=[4, 8]))
    c = a["comparisons"][0]
    assert [x["seeds"] for x in c["looks"]] == [4, 8]
    first = paired_difference({s: table[("v", "finetuned", 100)][s]["acc"] for s in range(4)},
                              {s: 0.5 for s in range(4)})
    assert c["looks"][0]["mean"] == pytest.approx(first["mean"])
    assert c["looks"][0]["verdict"] != "not decided yet" and c["first_decided_at"] == 4
    assert "| v - none | " in render_report(a) and "4 seeds | 8 seeds |" in render_report(a)


def test_the_seed_and_image_split_is_reported_with_per_image_results():
    rng = np.random.default_rng(1)
    table, _ = table_of({("none", "finetuned"): [0.5, 0.52, 0.49],
                         ("v", "finetuned"): [0.53, 0.54, 0.52]})
    correct = {("none", "finetuned", 100): (rng.random((3, 200)) < 0.5).astype(float),
               ("v", "finetuned", 100): (rng.random((3, 200)) < 0.53).astype(float)}
    a = summarize(table, "none", design(3), correct=correct)
    assert a["comparisons"][0]["images"]["components"]["se"] > 0
    assert "## Seeds and test images" in render_report(a)


def test_summary_metrics_keep_the_same_columns_at_any_number_of_seeds():
    def columns(n: int) -> set[str]:
        rng = np.random.default_rng(n)
        table, losses = table_of({
            ("version_0", "finetuned"): list(0.5 + rng.normal(0, 0.01, n)),
            ("version_1", "finetuned"): list(0.53 + rng.normal(0, 0.01, n)),
            ("version_1", "frozen"): list(0.4 + rng.normal(0, 0.01, n))})
        m = summary_metrics(summarize(table, "version_0", design(n), losses))
        flat = set()

        def walk(x, prefix):
            for k, v in x.items():
                walk(v, f"{prefix}{k}.") if isinstance(v, dict) else flat.add(prefix + k)
        walk(m, "")
        return flat
    assert columns(6) == columns(24)
    assert columns(6) == {"n_seeds", "version_0.finetuned.n100.acc",
                          "version_1.finetuned.n100.acc", "version_1.frozen.n100.acc",
                          "version_1.finetuned.n100.diff", "version_1.finetuned.n100.diff_low",
                          "version_1.finetuned.n100.diff_high"}


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


def leaves(x: dict, prefix: str = "") -> set[str]:
    """The dotted keys of a nested mapping's values: the columns `dvc exp show` makes of it."""
    return set().union(*(leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
                         for k, v in x.items()))


def test_the_default_study_shows_at_most_20_metric_columns_at_any_number_of_seeds():
    """`dvc exp show` lists every key of every declared metrics file: the default study's are
    metrics/summary.json's alone (the per-run files are outputs, not metrics), and their count
    does not grow with the seeds."""
    import yaml
    from conftest import DEFAULT_PARAMS, ROOT
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = [m for s in stages.values() for m in s.get("metrics", [])]
    assert declared == [{"metrics/summary.json": {"cache": False}}]
    st = DEFAULT_PARAMS["study"]
    for n in (6, 12, 24):
        rng = np.random.default_rng(n)
        table, _ = table_of({(v, "finetuned"): list(0.5 + rng.normal(0, 0.01, n))
                             for v in st["versions"]})
        m = summary_metrics(summarize(table, st["baseline"], design(n, looks=[30]),
                                      contrasts=st["contrasts"]))
        count = len(leaves(m))
        assert count <= 20 and count == 1 + len(st["versions"]) + 3 * (
            len(st["versions"]) - 1 + len(st["contrasts"]))
