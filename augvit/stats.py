"""The statistics of the study: means with t intervals, paired differences across seeds,
verdicts read off intervals, the planning value of the spread, and the split of a difference's
variance between seeds and test images. The intervals that verdicts are read from come from the
group-sequential design in augvit/sequential.py.

Runs with the same seed share the model init and the data order, so versions are compared by
a paired t-test across seeds: the 95% CI of the mean per-seed difference uses Student's t with
n-1 degrees of freedom. With one seed there is no interval (None), and nothing is significant;
a difference that is the same for every seed has no p-value either (zero variance).

`power` and `seeds_needed` are those of the two-sided paired t-test at the Bonferroni level
alpha/m for a family of m comparisons, with `sd` the true SD of the per-seed differences: a
fixed-sample planning figure (bench/regimes.py uses it to rank training regimes).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def mean_ci(values: list[float], level: float = 0.95) -> dict:
    """Mean, sample std, n and the t-based confidence interval of the mean."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "std": None, "n": n, "ci95": None}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "ci95": [mean - half, mean + half]}


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """a - b over the seeds both have: mean difference, its CI, the paired t-test p-value."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = [a[s] - b[s] for s in seeds]
    out = mean_ci(d)
    out["seeds"] = seeds
    if out["ci95"] is None:
        out.update(p_value=None, significant=False)
    elif out["std"] == 0:
        # Every seed gave the same difference: a t-test divides by zero. That is no evidence
        # of an effect from a handful of seeds (two runs can tie by chance), so it is reported
        # as such: no p-value, not significant, flagged.
        out.update(p_value=None, significant=False, zero_variance=True)
    else:
        out["p_value"] = float(stats.ttest_1samp(d, 0.0).pvalue)
        out["significant"] = bool(out["ci95"][0] > 0 or out["ci95"][1] < 0)
    return out


# ---- power of the paired t-test -----------------------------------------------------------

def _check_design(sd: float, n: int, alpha: float, m: int) -> None:
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"power: sd must be a positive number, got {sd!r} (zero spread "
                         "means no t-test: see paired_difference's zero_variance)")
    if int(n) != n or n < 2:
        raise ValueError(f"power: n must be an integer >= 2 seeds, got {n!r}")
    if not 0 < alpha < 1 or int(m) != m or m < 1:
        raise ValueError(f"power: need 0 < alpha < 1 and an integer m >= 1, got {alpha!r}, {m!r}")


def _critical_t(n: int | np.ndarray, alpha: float, m: int) -> float | np.ndarray:
    """|t| beyond which the two-sided test at the Bonferroni level alpha/m rejects."""
    return stats.t.ppf(1 - alpha / (2 * m), np.asarray(n) - 1)


def _power_at(ncp, n, alpha: float, m: int):
    """P(|T| > crit) for T ~ noncentral t(n-1, ncp): both tails, so a wrong-sign rejection
    counts too (it is a rejection of the test, if not of the claim). The lower tail is
    taken as sf(crit, df, -ncp), its mirror image: scipy's nct.cdf returns NaN far out in
    that tail (scipy 1.17, e.g. cdf(-4.31, 4, 8.0)) where sf is fine."""
    crit, df = _critical_t(n, alpha, m), np.asarray(n) - 1
    return stats.nct.sf(crit, df, ncp) + stats.nct.sf(crit, df, -np.asarray(ncp))


def power(sd: float, n: int, effect: float, alpha: float, m: int) -> float:
    """Power of the two-sided paired t-test on n seeds at level alpha/m (Bonferroni, a lower
    bound for Holm) when the true mean difference is `effect` and the per-seed differences
    are normal with SD `sd`: P(|T| > t_{1-alpha/(2m), n-1}) with T noncentral t, n-1 degrees
    of freedom, noncentrality effect * sqrt(n) / sd. At effect 0 it is alpha/m."""
    _check_design(sd, n, alpha, m)
    return float(_power_at(effect * math.sqrt(n) / sd, n, alpha, m))


def seeds_needed(sd: float, target: float, alpha: float, m: int, power: float = 0.8,
                 max_n: int = 1000) -> int | None:
    """The smallest number of seeds n >= 2 whose paired t-test (two-sided, level alpha/m)
    detects a true difference `target` with probability >= `power`, the per-seed SD being
    `sd`; None when even max_n seeds do not. Same assumptions as `power`."""
    _check_design(sd, 2, alpha, m)
    if not target > 0:
        raise ValueError(f"seeds_needed: target must be a positive difference, got {target!r}")
    ns = np.arange(2, max_n + 1)
    ok = np.flatnonzero(_power_at(target * np.sqrt(ns) / sd, ns, alpha, m) >= power)
    return int(ns[ok[0]]) if ok.size else None      # power grows with n: the first is it


# ---- verdicts read off intervals ----------------------------------------------------------

VERDICTS = ("helps by at least the target", "hurts by at least the target", "helps", "hurts",
            "equivalent within the target", "not decided yet")


def verdict_codes(lo: np.ndarray, hi: np.ndarray, target: float) -> np.ndarray:
    """`verdict` for arrays of interval ends: each an index into VERDICTS."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    return np.select([lo > target, hi < -target, (-target < lo) & (hi < target), lo > 0, hi < 0],
                     [0, 1, 4, 2, 3], default=5)


def verdict(interval: list[float] | None, target: float) -> str:
    """The verdict a (1 - alpha) interval of a difference a - b supports, for the smallest
    difference worth finding `target` (> 0). In this order: the interval wholly above +target
    ("helps by at least the target") or below -target ("hurts by ..."); wholly inside
    (-target, +target) ("equivalent within the target": two one-sided tests, TOST, Schuirmann
    1987, each at half the interval's level); excluding 0 ("helps" / "hurts", its size
    against the target not yet known); anything else "not decided yet". An interval that
    covers the truth makes every one of these claims true, so the claims' error rate is at
    most the interval's non-coverage. None (no interval) is "not decided yet"."""
    if not target > 0:
        raise ValueError(f"verdict: target must be a positive difference, got {target!r}")
    if interval is None:
        return VERDICTS[5]
    return VERDICTS[int(verdict_codes(interval[0], interval[1], target))]


def pooled_sd_upper(sds: list[float | None], ns: list[int], level: float = 0.8) -> dict | None:
    """The pooled SD of several comparisons' per-seed differences, and its one-sided `level`
    upper confidence limit s * sqrt(df / chi2_{1 - level, df}) (the planning value that
    Browne, Statistics in Medicine 1995, recommends at 80%). df = sum(n_i - 1); comparisons
    that share a version are correlated, so the limit is somewhat lower than a limit from as
    many independent differences would be. None without any spread."""
    pairs = [(sd, n) for sd, n in zip(sds, ns) if sd is not None and sd > 0 and n >= 2]
    if not pairs:
        return None
    df = sum(n - 1 for _, n in pairs)
    s = math.sqrt(sum((n - 1) * sd ** 2 for sd, n in pairs) / df)
    return {"sd": s, "df": df, "level": level,
            "upper": s * math.sqrt(df / stats.chi2.ppf(1 - level, df))}


def variance_components(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """The variance of mean(a) - mean(b) over seeds and test images, split by source: the
    two-way random-effects model d[s, j] = mu + seed_s + image_j + interaction_sj of the
    per-image differences d = a - b, with method-of-moments (ANOVA) estimates clipped at 0.
    Returns each source's share of Var(mean d): "seeds" (sigma_s^2 / S), "images"
    (sigma_i^2 / N), "interaction" (sigma_e^2 / (S N)), and "se", the square root of their
    sum, unbiased but for the clipping. Needs >= 2 seeds and >= 2 images."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)   # (S, N)
    if d.ndim != 2 or min(d.shape) < 2:
        raise ValueError(f"variance_components: need (n_seeds >= 2, n_test >= 2) arrays, got "
                         f"{d.shape}")
    n_seeds, n_test = d.shape
    rows, cols, grand = d.mean(axis=1), d.mean(axis=0), d.mean()
    ms_seed = n_test * ((rows - grand) ** 2).sum() / (n_seeds - 1)
    ms_image = n_seeds * ((cols - grand) ** 2).sum() / (n_test - 1)
    resid = d - rows[:, None] - cols[None, :] + grand
    ms_inter = (resid ** 2).sum() / ((n_seeds - 1) * (n_test - 1))
    # E[ms_seed] = N sigma_s^2 + sigma_e^2, E[ms_image] = S sigma_i^2 + sigma_e^2
    out = {"seeds": max(0.0, ms_seed - ms_inter) / (n_seeds * n_test),
           "images": max(0.0, ms_image - ms_inter) / (n_seeds * n_test),
           "interaction": ms_inter / (n_seeds * n_test)}
    return {k: float(v) for k, v in out.items()} | {"se": math.sqrt(sum(out.values()))}
