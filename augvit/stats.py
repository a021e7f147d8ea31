"""The statistics of the study: means with t intervals, paired differences across seeds, the
power of those comparisons, plain-words verdicts and a seed-and-image bootstrap.

Runs with the same seed share the model init and the data order, so versions are compared by
a paired t-test across seeds: the 95% CI of the mean per-seed difference uses Student's t with
n-1 degrees of freedom. With one seed there is no interval (None), and nothing is significant;
a difference that is the same for every seed has no p-value either (zero variance).

Power (`power`, `min_detectable_difference`, `seeds_needed`, `replication_probability`) is that
of the same two-sided paired t-test, at the Bonferroni level alpha/m for a family of m
comparisons: Holm's first step uses alpha/m and its later steps are more lenient, so this is
a lower bound on the power under Holm. It takes `sd`, the sample SD of the per-seed
differences, as the true SD: with 5 seeds that SD is itself uncertain (its 95% interval runs
from about 0.6x to 2.9x the estimate), so every power figure here is a plug-in estimate.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats


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


def min_detectable_difference(sd: float, n: int, alpha: float, m: int,
                              power: float = 0.8) -> float:
    """The smallest true mean difference (> 0; the test is symmetric) that the two-sided
    paired t-test on n seeds at level alpha/m detects with probability `power`: the root in
    the noncentrality of `power(...) = power` (brentq), times sd / sqrt(n). Same assumptions
    as `power`."""
    _check_design(sd, n, alpha, m)
    if not alpha / m < power < 1:
        raise ValueError(f"min_detectable_difference: power must lie in (alpha/m, 1) = "
                         f"({alpha / m:g}, 1), got {power!r}")
    def gap(ncp: float) -> float:
        return float(_power_at(ncp, n, alpha, m)) - power

    high = 2 * float(_critical_t(n, alpha, m)) + 2      # power rises with ncp: widen until past
    while gap(high) < 0:
        high *= 2
    return optimize.brentq(gap, 0.0, high, xtol=1e-10) * sd / math.sqrt(n)


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


def replication_probability(diff_mean: float, sd: float, n: int, alpha: float,
                            m: int) -> dict[str, float | None]:
    """The chances for an independent rerun with the same n seeds, *at the observed effect*:
    the observed mean difference and SD are plugged in as the truth (noncentral t, as in
    `power`). `same_direction`: significant at alpha/m with the observed sign (None when the
    observed mean is 0); `significant`: significant either way (the power at the observed
    effect). Optimistic for a result that is reported because it was significant: its effect
    is biased upward (the winner's curse) and a 5-seed SD may be too small; no shrinkage is
    applied, so read it as an upper-leaning figure. A result exactly at the threshold
    replicates about half the time."""
    _check_design(sd, n, alpha, m)
    ncp = abs(diff_mean) * math.sqrt(n) / sd
    crit, df = float(_critical_t(n, alpha, m)), n - 1
    same = None if diff_mean == 0 else float(stats.nct.sf(crit, df, ncp))
    return {"same_direction": same, "significant": float(_power_at(ncp, n, alpha, m))}


# ---- plain-words verdicts -----------------------------------------------------------------

VERDICTS = ("helps", "hurts", "no difference at this resolution", "cannot tell")


def bonferroni_ci(mean: float, sd: float, n: int, alpha: float, m: int) -> list[float]:
    """The simultaneous (1 - alpha) t interval of a mean difference in a family of m:
    mean +- t_{1-alpha/(2m), n-1} * sd / sqrt(n). All m cover their truths together with
    probability >= 1 - alpha."""
    half = float(_critical_t(n, alpha, m)) * sd / math.sqrt(n)
    return [mean - half, mean + half]


def _pp(x: float) -> str:
    return f"{100 * x:+.2f} pp"


def verdict(mean: float, sd: float | None, n: int, p_holm: float | None, *, target: float,
            alpha: float, m: int, min_power: float = 0.8) -> dict:
    """A plain-words verdict on one comparison with the baseline (differences are fractions,
    written in percentage points). A claim needs a study able to see `target`, the smallest
    difference that matters: power >= min_power to detect it (`power`, level alpha/m).
    Then "helps"/"hurts" when the Holm-adjusted p <= alpha (sign of the mean), and
    "no difference at this resolution" when the simultaneous 1 - alpha interval (`bonferroni_ci`,
    a TOST at level alpha/(2m) per comparison) lies inside (-target, +target). Everything
    else, an underpowered significant result included, is "cannot tell": such results often
    do not replicate. Returns {"verdict", "reason": one sentence with the numbers, "power":
    the power at target, or None without a test}."""
    untestable = "one seed gives no test" if sd is None or n < 2 else \
        f"every seed gave the same difference ({_pp(mean)}): no spread to test" if sd == 0 \
        else "there is no p-value" if p_holm is None else None
    if untestable:
        return {"verdict": "cannot tell", "reason": f"{untestable}.", "power": None}
    pw, (lo, hi) = power(sd, n, target, alpha, m), bonferroni_ci(mean, sd, n, alpha, m)
    held, inside = p_holm <= alpha, -target < lo and hi < target
    if pw < min_power:
        more = seeds_needed(sd, target, alpha, m, min_power)
        need = f"about {more} seeds would give {min_power:.0%}" if more else \
            f"over 1000 seeds would be needed for {min_power:.0%}"
        said, why = "cannot tell", (
            "significant after Holm but underpowered, so it may not replicate; " if held
            else "too few seeds to tell; ") + need
    elif held:
        said = "helps" if mean > 0 else "hurts"
        why = "holds after Holm with adequate power" + (
            f", though by less than {100 * target:.2f} pp" if inside else "")
    elif inside:
        said, why = "no difference at this resolution", \
            f"the whole interval lies within ±{100 * target:.2f} pp"
    else:
        said, why = "cannot tell", ("not significant, yet the interval reaches beyond "
                                    f"±{100 * target:.2f} pp")
    reason = (f"{_pp(mean)}, p_holm = {p_holm:.2g}, simultaneous {1 - alpha:.0%} CI [{_pp(lo)}, "
              f"{_pp(hi)}], {pw:.0%} power to detect ±{100 * target:.2f} pp with {n} seeds: "
              f"{why}.")
    return {"verdict": said, "reason": reason, "power": pw}


# ---- a bootstrap over seeds and test images -----------------------------------------------

def hierarchical_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0,
                           resample_images: bool = True) -> dict:
    """Percentile 95% interval and SE of mean(a) - mean(b) that count both sources of
    chance: which seeds were run and which test images were drawn. a, b: (n_seeds, n_test)
    per-image scores (0/1 correctness), paired by row (seed) and column (image). Each draw
    resamples seeds with replacement and, independently, images with replacement, the same
    images for every seed and for a and b: the test set is shared, so images are crossed
    with seeds, not nested in them (Owen's "pigeonhole" bootstrap, Ann. Appl. Stat. 2007).
    It is conservative: its variance counts the seed x image interaction (for 0/1 scores,
    mostly coin-flip noise) three times instead of once, i.e. it exceeds the truth by about
    2 * variance_components(a, b)["interaction"]; use that function for an unbiased SE.
    resample_images=False gives the seed-only bootstrap, too narrow when seed-to-seed
    variation dominates and there are few seeds (the t interval of paired_difference is the
    seed-level statement then). Deterministic given `seed`."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or 0 in a.shape:
        raise ValueError(f"hierarchical_bootstrap: a and b must be equal (n_seeds, n_test) "
                         f"arrays, got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or n_boot < 2:
        raise ValueError("hierarchical_bootstrap: scores must be finite and n_boot >= 2")
    d = a - b                                                   # (S, N)
    n_seeds, n_test = d.shape
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n_test)         # draws per pass: a few tens of MB at most
    boot = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=r)  # (r, S)
        per_image = counts @ d / n_seeds        # (r, N): each draw's seeds, averaged per image
        if resample_images:                     # int32: half the memory of default indices
            idx = rng.integers(0, n_test, size=(r, n_test), dtype=np.int32)
            per_image = np.take_along_axis(per_image, idx, axis=1)
        boot[start:start + r] = per_image.mean(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return {"mean": float(d.mean()), "ci95": [float(lo), float(hi)],
            "se": float(boot.std(ddof=1)), "n_boot": n_boot}


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
