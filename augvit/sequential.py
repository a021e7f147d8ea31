"""Adding seeds by plan: a group-sequential design whose intervals stay valid at every look.

The study is read at looks: after the first n_1 seeds, after n_2, ... up to n_K (study.looks).
Reading the data, then adding seeds because the answer was not clear, is a second chance to be
wrong; here it is paid for in advance with an alpha-spending function (Lan and DeMets,
Biometrika 1983): the family's error rate alpha is spent over the looks by the information
fraction t = n / n_K, little at the early looks and the rest at the last.

- `spent(t, alpha, kind)`: the cumulative alpha spent by fraction t. O'Brien-Fleming type
  2 - 2 Phi(z_{1-alpha/2} / sqrt(t)) (very little early, nearly the fixed-sample level at the
  end) or Pocock type alpha ln(1 + (e - 1) t) (evenly).
- `boundaries(fractions, alpha, kind)`: the two-sided critical z of each look such that the
  probability, under no difference, of first crossing at look k is what look k may spend:
  found by numerical integration of the Brownian-motion recursion (Armitage, McPherson and
  Rowe, JRSS A 1969; Jennison and Turnbull, *Group Sequential Methods*, 2000, ch. 19).
- `repeated_interval(d, looks, alpha, kind)`: the repeated confidence interval at the latest
  look (Jennison and Turnbull, JRSS B 1989): mean +- c * sd / sqrt(n), with c the t quantile
  (n - 1 degrees of freedom) at the look's nominal level, the usual t-analogue of the z
  boundary (Jennison and Turnbull 2000, sec. 11.4). Intervals built this way cover the truth
  at all looks at once with probability >= 1 - alpha, so any verdict read off them, at any
  look, is wrong with probability <= alpha; `repeated_p_value` is the smallest alpha at which
  the interval excludes 0, so p-values and intervals agree.

No maintained Python package computes spending boundaries (the reference implementations are
the R packages gsDesign and rpact), hence the ~40 lines of integration below; tests check them
against published values and by simulation of the whole procedure.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import optimize, stats

from augvit.stats import VERDICTS, verdict_codes

UNDECIDED = VERDICTS.index("not decided yet")

SPENDING = ("obrien_fleming", "pocock")
GRID = 1201          # points per look of the integration grid (Simpson's rule; odd)
NEVER = 40.0         # a z no look reaches: where a look may spend nothing


def spent(t: float, alpha: float, kind: str) -> float:
    """Cumulative two-sided alpha spent by information fraction t in (0, 1]."""
    if not 0 < t <= 1:
        raise ValueError(f"spent: information fraction must be in (0, 1], got {t!r}")
    if kind == "obrien_fleming":
        return float(2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / math.sqrt(t)))
    if kind == "pocock":
        return float(alpha * math.log(1 + (math.e - 1) * t))
    raise ValueError(f"spent: kind must be one of {SPENDING}, got {kind!r}")


def _simpson(n: int) -> np.ndarray:
    w = np.ones(n)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return w / 3


def _exit(grid: np.ndarray, mass: np.ndarray, delta: float, b_next: float) -> float:
    """P(the paths still running, with probability mass `mass` at `grid`, end beyond
    +-b_next at the next look, delta later)."""
    sd = math.sqrt(delta)
    return float(mass @ (stats.norm.cdf((-b_next - grid) / sd)
                         + stats.norm.sf((b_next - grid) / sd)))


def _inside(grid: np.ndarray, mass: np.ndarray, delta: float,
            b_next: float) -> tuple[np.ndarray, np.ndarray]:
    """The next look's grid on (-b_next, b_next) and the mass of the paths still inside."""
    sd, new = math.sqrt(delta), np.linspace(-b_next, b_next, GRID)
    dens = stats.norm.pdf((new[:, None] - grid[None, :]) / sd) @ mass / sd
    return new, dens * _simpson(GRID) * (new[1] - new[0])


@lru_cache(maxsize=4096)
def boundaries(fractions: tuple[float, ...], alpha: float, kind: str) -> tuple[float, ...]:
    """Two-sided critical z per look for information fractions 0 < t_1 < ... <= 1."""
    if any(b <= a for a, b in zip(fractions, fractions[1:])) or not 0 < fractions[0] or \
            fractions[-1] > 1:
        raise ValueError(f"boundaries: fractions must increase within (0, 1], got {fractions}")
    budget = [spent(t, alpha, kind) for t in fractions]
    crit = [min(NEVER, float(stats.norm.isf(budget[0] / 2)))]
    root = math.sqrt(fractions[0])
    grid = np.linspace(-crit[0] * root, crit[0] * root, GRID)    # S = Z sqrt(t): Brownian
    mass = stats.norm.pdf(grid / root) / root * _simpson(GRID) * (grid[1] - grid[0])
    for k in range(1, len(fractions)):
        delta, want, root = fractions[k] - fractions[k - 1], budget[k] - budget[k - 1], \
            math.sqrt(fractions[k])
        def gap(c: float) -> float:
            return _exit(grid, mass, delta, c * root) - want
        # a look may spend nothing (want below what even NEVER lets out), or all that is
        # left (at a family level near 1, when a p-value is searched for)
        c = NEVER if gap(NEVER) >= 0 else 0.0 if gap(1e-9) <= 0 else \
            optimize.brentq(gap, 1e-9, NEVER, xtol=1e-10)
        crit.append(float(c))
        grid, mass = _inside(grid, mass, delta, c * root)
    return tuple(crit)


def look_sizes(n: int, looks: list[int]) -> list[int]:
    """The looks up to n seeds: the planned ones before it, then n itself (an unplanned look
    is spent at its own fraction, as the Lan-DeMets approach allows)."""
    if n > max(looks):
        raise ValueError(f"{n} seeds is beyond the design's last look ({max(looks)}): "
                         "extend study.looks to plan more")
    return [k for k in sorted(looks) if k < n] + [n]


def t_critical(n: int, looks: list[int], alpha: float, kind: str) -> float:
    """The t quantile that the repeated interval uses at n seeds: the nominal two-sided level
    of the z boundary at that look, on n - 1 degrees of freedom. inf with fewer than 2."""
    if n < 2:
        return math.inf
    sizes = look_sizes(n, looks)
    fractions = tuple(k / max(looks) for k in sizes)
    nominal = 2 * stats.norm.sf(boundaries(fractions, alpha, kind)[-1])
    return float(stats.t.isf(nominal / 2, n - 1))


def repeated_interval(mean: float, sd: float, n: int, looks: list[int], alpha: float,
                      kind: str) -> list[float] | None:
    """The repeated (1 - alpha) interval of a mean difference at n seeds; None below 2."""
    if n < 2:
        return None
    half = t_critical(n, looks, alpha, kind) * sd / math.sqrt(n)
    return [mean - half, mean + half]


def repeated_p_value(mean: float, sd: float, n: int, looks: list[int], kind: str) -> float | None:
    """The smallest alpha whose repeated interval at this look excludes 0 (1 if none does)."""
    if n < 2 or sd <= 0:
        return None
    t_obs = abs(mean) * math.sqrt(n) / sd

    def gap(log_a: float) -> float:
        return t_critical(n, looks, math.exp(log_a), kind) - t_obs
    lo, hi = math.log(1e-10), math.log(1 - 1e-9)
    if gap(hi) > 0:
        return 1.0
    if gap(lo) < 0:
        return 1e-10
    return float(math.exp(optimize.brentq(gap, lo, hi, xtol=1e-6)))


def decide_probability(diff: float, sd: float, n: int, looks: list[int], alpha: float,
                       kind: str, target: float, draws: int = 20_000) -> float:
    """Planning only: the chance that the repeated interval at n seeds supports a verdict other
    than "not decided yet", if the per-seed differences were normal with mean `diff` and SD
    `sd`: the same interval as the report's, on `draws` simulated sets of n seeds (a fixed
    random stream, so the same question gets the same answer)."""
    if n < 2:
        return 0.0
    x = diff + sd * np.random.default_rng(n).standard_normal((draws, n))
    half = t_critical(n, looks, alpha, kind) * x.std(axis=1, ddof=1) / math.sqrt(n)
    codes = verdict_codes(x.mean(axis=1) - half, x.mean(axis=1) + half, target)
    return float((codes != UNDECIDED).mean())


def seeds_to_decide(diff: float, sd: float, n: int, looks: list[int], alpha: float, kind: str,
                    target: float, want: float = 0.8) -> dict:
    """The first planned look after n seeds at which `decide_probability` reaches `want`:
    {"seeds": that look or None, "probability": the chance there (at the last look when
    none reaches it)}."""
    later = [k for k in sorted(looks) if k > n]
    chance = 0.0
    for k in later:
        chance = decide_probability(diff, sd, k, looks, alpha, kind, target)
        if chance >= want:
            return {"seeds": k, "probability": chance}
    return {"seeds": None, "probability": chance, "last_look": max(looks)}


def simulate(true_diffs: list[float], sd: float, looks: list[int], alpha: float, kind: str,
             target: float, studies: int = 10_000, seed: int = 0) -> dict:
    """The whole procedure on simulated studies: per-seed differences for each comparison of
    a family of m = len(true_diffs), normal with mean true_diffs[j] and SD `sd`, independent
    across comparisons (the Bonferroni split holds whatever their correlation); at every look
    the repeated interval at alpha/m and the verdict read off it. Returns the share of studies
    with any interval missing its truth at any look (`miss_any`), with any false verdict at
    any look (`wrong_any`), and per look and comparison the share decided (`decided`)."""
    rng = np.random.default_rng(seed)
    truth = np.asarray(true_diffs, dtype=float)
    m = len(truth)
    d = truth[None, :, None] + sd * rng.standard_normal((studies, m, max(looks)))
    miss, wrong, decided = np.zeros(studies, bool), np.zeros(studies, bool), []
    for n in sorted(looks):
        x = d[:, :, :n]
        mean = x.mean(axis=2)
        half = t_critical(n, looks, alpha / m, kind) * x.std(axis=2, ddof=1) / math.sqrt(n)
        lo, hi = mean - half, mean + half
        miss |= ((lo > truth) | (hi < truth)).any(axis=1)
        codes = verdict_codes(lo, hi, target)
        wrong |= _false(codes, truth, target).any(axis=1)
        decided.append((codes != UNDECIDED).mean(axis=0).tolist())
    return {"studies": studies, "miss_any": float(miss.mean()), "wrong_any": float(wrong.mean()),
            "looks": sorted(looks), "decided": decided}


def _false(codes: np.ndarray, truth: np.ndarray, target: float) -> np.ndarray:
    """(studies, m) True where a verdict (an index into VERDICTS) is false for the truth."""
    t = np.broadcast_to(truth, codes.shape)
    return (((codes == 0) & (t < target)) | ((codes == 1) & (t > -target))
            | ((codes == 2) & (t <= 0)) | ((codes == 3) & (t >= 0))
            | ((codes == 4) & (np.abs(t) >= target)))


def main(argv: list[str] | None = None) -> None:
    """`python -m augvit.sequential --sd 0.8`: the design in params.yaml on simulated studies:
    its family error rate under no difference, and at each look the chance to decide a
    comparison whose true difference is the target, when the per-seed SD is `--sd` points."""
    import argparse

    from augvit.params import load_params
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--sd", type=float, required=True,
                    help="SD of a comparison's per-seed differences, in points")
    ap.add_argument("--studies", type=int, default=20_000)
    args = ap.parse_args(argv)
    st = load_params(args.params).study
    m = len([v for v in st.versions if v != st.baseline]) * len(st.backbones) * \
        len(st.train_sizes) + len(st.contrasts) * len(st.backbones) * len(st.train_sizes)
    target, sd = 100 * st.target_difference, args.sd
    null = simulate([0.0] * m, sd, list(st.looks), 0.05, st.spending, target, args.studies)
    alt = simulate([target] + [0.0] * (m - 1), sd, list(st.looks), 0.05, st.spending, target,
                   args.studies, seed=1)
    print(f"design: looks {list(st.looks)}, {st.spending} spending, {m} comparisons, "
          f"alpha 0.05, target {target:.2f} pp, SD {sd:.2f} pp, {args.studies:,} studies")
    print(f"no difference anywhere: an interval misses its truth in {null['miss_any']:.2%} "
          f"of studies, a false verdict in {null['wrong_any']:.2%}")
    for n, dec in zip(alt["looks"], alt["decided"]):
        print(f"  look at {n} seeds: a true {target:.2f} pp difference is decided in "
              f"{dec[0]:.1%} of studies")
    print(f"with one such difference, a false verdict anywhere: {alt['wrong_any']:.2%}")


if __name__ == "__main__":
    main()
