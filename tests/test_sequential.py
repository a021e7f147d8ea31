"""The group-sequential design: spending functions, boundaries checked by simulation of
Brownian motion, repeated intervals and p-values that agree, and the whole procedure (looks,
Bonferroni over the family, verdicts read off the intervals) simulated under no difference and
under a true difference of the target, with the error rate and the power the planning claims."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from augvit.sequential import (boundaries, decide_probability, look_sizes, repeated_interval,
                               repeated_p_value, seeds_to_decide, simulate, spent, t_critical)
from augvit.stats import mean_ci

# (looks, spending) pairs a study may use: the default's and the textbook ones
DESIGNS = [([8, 16, 24], "pocock"), ([6, 12, 18, 24], "obrien_fleming"),
           ([10, 20], "obrien_fleming")]


@pytest.mark.parametrize("kind", ["obrien_fleming", "pocock"])
def test_a_spending_function_spends_alpha_by_the_end_and_never_gives_it_back(kind):
    t = np.linspace(0.01, 1, 100)
    got = [spent(x, 0.05, kind) for x in t]
    assert got[-1] == pytest.approx(0.05, abs=1e-12) and np.all(np.diff(got) >= 0)
    # O'Brien-Fleming type spends almost nothing early; Pocock type about half by t = 0.4
    assert (spent(0.25, 0.05, kind) < 1e-4) == (kind == "obrien_fleming")
    with pytest.raises(ValueError, match="information fraction"):
        spent(0.0, 0.05, kind)
    with pytest.raises(ValueError, match="kind must be one of"):
        spent(0.5, 0.05, "haybittle")


def test_one_look_is_the_fixed_sample_test():
    assert boundaries((1.0,), 0.05, "obrien_fleming")[0] == pytest.approx(1.959964, abs=1e-6)
    # one look: the repeated interval is Student's t interval of the mean
    d = [0.02, 0.03, 0.04, 0.01, 0.05]
    ci = mean_ci(d)
    got = repeated_interval(np.mean(d), np.std(d, ddof=1), 5, [5], 0.05, "pocock")
    assert got == pytest.approx(ci["ci95"], abs=1e-9)
    assert repeated_p_value(np.mean(d), np.std(d, ddof=1), 5, [5], "pocock") == \
        pytest.approx(stats.ttest_1samp(d, 0).pvalue, rel=1e-4)


@pytest.mark.parametrize("fractions", [(0.25, 0.5, 0.75, 1.0), (1 / 3, 1.0), (0.2, 0.3, 1.0)])
@pytest.mark.parametrize("kind", ["obrien_fleming", "pocock"])
def test_the_boundaries_spend_what_the_function_says_on_simulated_brownian_motion(fractions,
                                                                                  kind):
    """400,000 paths of Z_k = S(t_k) / sqrt(t_k): the share that first crosses at look k is
    spent(t_k) - spent(t_{k-1}) (Monte Carlo SE <= 0.00035)."""
    c = np.array(boundaries(fractions, 0.05, kind))
    rng = np.random.default_rng(1)
    steps = np.diff((0.0,) + fractions)
    z = np.cumsum(rng.standard_normal((400_000, len(fractions))) * np.sqrt(steps), axis=1)
    z /= np.sqrt(fractions)
    crossed = np.abs(z) >= c
    first = np.where(crossed.any(1), crossed.argmax(1), -1)
    budget = np.diff([0.0] + [spent(t, 0.05, kind) for t in fractions])
    for k, want in enumerate(budget):
        assert (first == k).mean() == pytest.approx(want, abs=0.0012)


def test_a_look_between_planned_ones_is_spent_at_its_own_fraction():
    assert look_sizes(12, [6, 12, 18, 24]) == [6, 12]
    assert look_sizes(10, [6, 12, 18, 24]) == [6, 10]
    with pytest.raises(ValueError, match="beyond the design's last look"):
        look_sizes(30, [6, 12, 18, 24])
    # later looks are narrower at the same data; an early O'Brien-Fleming look very wide
    assert t_critical(24, [6, 12, 18, 24], 0.0125, "obrien_fleming") < \
        t_critical(12, [6, 12, 18, 24], 0.0125, "obrien_fleming")
    assert t_critical(1, [6, 12], 0.05, "pocock") == math.inf


@pytest.mark.parametrize("looks, kind", DESIGNS)
def test_the_adjusted_p_and_the_interval_agree(looks, kind):
    """The interval at the family's level excludes 0 exactly when m * repeated p <= alpha."""
    rng = np.random.default_rng(5)
    m = 4
    for _ in range(40):
        n = int(rng.choice(looks))
        mean, sd = rng.normal(0.01, 0.01), rng.uniform(0.003, 0.02)
        lo, hi = repeated_interval(mean, sd, n, looks, 0.05 / m, kind)
        p = min(1.0, m * repeated_p_value(mean, sd, n, looks, kind))
        if abs(p - 0.05) > 1e-4:
            assert (lo > 0 or hi < 0) == (p <= 0.05)


@pytest.mark.parametrize("looks, kind", DESIGNS)
def test_the_whole_procedure_keeps_the_family_error_rate_under_no_difference(looks, kind):
    """20,000 simulated studies of 4 comparisons, all without a difference, read at every
    look: the intervals miss their truth at some look in at most 5% of studies (Monte Carlo
    SE 0.0015: the bound allows 3 SE), and a false verdict (a sign, or a size beyond the
    target, where there is none) is rarer still."""
    got = simulate([0.0] * 4, 1.0, looks, 0.05, kind, target=1.0, studies=20_000)
    assert got["miss_any"] <= 0.05 + 3 * 0.0015
    assert got["wrong_any"] <= got["miss_any"] and got["wrong_any"] <= 0.05


@pytest.mark.parametrize("looks, kind", DESIGNS)
def test_under_a_true_target_difference_the_planned_power_is_the_simulated_one(looks, kind):
    """One comparison differs by the target (SD 0.8 of it), three do not: the false-verdict
    rate stays below 5%, and at every look the share of studies that decide the comparison
    is what `decide_probability`, the report's planning, says (Monte Carlo SE <= 0.0035)."""
    got = simulate([1.0, 0.0, 0.0, 0.0], 0.8, looks, 0.05, kind, target=1.0, studies=20_000)
    assert got["wrong_any"] <= 0.05
    for n, decided in zip(got["looks"], got["decided"]):
        assert decided[0] == pytest.approx(
            decide_probability(1.0, 0.8, n, looks, 0.05 / 4, kind, 1.0), abs=0.015)
    assert got["decided"][-1][0] >= 0.95                 # the design's last look decides it


def test_the_planning_names_the_first_look_that_decides_or_says_none_does():
    looks = [8, 16, 24]
    plan = seeds_to_decide(0.02, 0.008, 8, looks, 0.0125, "pocock", 0.01)
    assert plan["seeds"] == 16 and plan["probability"] >= 0.8
    hopeless = seeds_to_decide(0.01, 0.05, 8, looks, 0.0125, "pocock", 0.01)
    assert hopeless["seeds"] is None and hopeless["last_look"] == 24
    assert hopeless["probability"] < 0.8
