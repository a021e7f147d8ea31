"""The statistics of the study: means with t intervals, paired differences across seeds.

Runs with the same seed share the model init and the data order, so versions are compared by
a paired t-test across seeds: the 95% CI of the mean per-seed difference uses Student's t with
n-1 degrees of freedom. With one seed there is no interval (None), and nothing is significant;
a difference that is the same for every seed has no p-value either (zero variance).
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


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None): the k-th smallest of m p-values is
    multiplied by m - k + 1, then made non-decreasing in that order and capped at 1. A
    comparison holds at level a after adjustment iff its adjusted p <= a; the family-wise error
    rate over all of them is then at most a."""
    bad = [p for p in p_values if p is not None and not 0 <= p <= 1]    # NaN fails both
    if bad:
        raise ValueError(f"holm: got p-value(s) {bad}; allowed: numbers in [0, 1] or None (no "
                         "test). A NaN would silently change the others' adjustment.")
    ranked = sorted((p, k) for k, p in enumerate(p_values) if p is not None)
    m, out, running = len(ranked), list(p_values), 0.0
    for rank, (p, k) in enumerate(ranked):
        running = max(running, min(1.0, (m - rank) * p))
        out[k] = running
    return out
