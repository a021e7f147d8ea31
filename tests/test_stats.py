"""Power, verdicts read off intervals, the planning SD, variance components and compact
predictions, checked against references: simulated t-tests (scipy.stats.power), published
sample sizes, closed forms worked out in the comments."""
from __future__ import annotations

import base64
import tracemalloc
import zlib

import numpy as np
import pytest
from scipy import stats

from augvit.predictions import correctness, decode_predictions, encode_predictions
from augvit.stats import (VERDICTS, pooled_sd_upper, power, seeds_needed, variance_components,
                          verdict)


# ---- power ---------------------------------------------------------------------------------

def simulated_power(sd: float, n: int, effect: float, level: float, alternative="two-sided"):
    """The rejection rate of scipy's one-sample t-test on simulated normal differences."""
    rng = np.random.default_rng(0)
    return stats.power(lambda x, axis=-1: stats.ttest_1samp(x, 0.0, axis=axis,
                                                            alternative=alternative),
                       lambda size: rng.normal(effect, sd, size=size), (n,),
                       significance=level, n_resamples=40_000).power


@pytest.mark.parametrize("sd, n, effect, m", [
    (0.006108, 5, 0.01, 4),          # padcrop_flip's spread at 5 seeds, 1 pp, 4 comparisons
    (1.0, 10, 0.8, 1),
    (1.0, 3, 2.0, 2),
    (0.02, 12, -0.015, 3),           # a negative effect: the test is two-sided
])
def test_power_matches_a_simulated_t_test(sd, n, effect, m):
    # 40,000 simulated tests: Monte Carlo SE <= sqrt(0.25 / 40000) = 0.0025
    assert power(sd, n, effect, 0.05, m) == pytest.approx(
        simulated_power(sd, n, effect, 0.05 / m), abs=0.01)


def test_power_is_the_level_without_an_effect_and_uses_the_bonferroni_level():
    # at effect 0 the test rejects with probability alpha / m exactly
    assert power(0.01, 5, 0.0, 0.05, 4) == pytest.approx(0.0125, abs=1e-12)
    assert power(0.01, 5, 0.01, 0.05, 4) == pytest.approx(power(0.01, 5, 0.01, 0.0125, 1))
    assert power(0.01, 5, 0.01, 0.05, 4) < power(0.01, 5, 0.01, 0.05, 1)


def test_power_approaches_the_normal_formula_with_many_seeds():
    # n = 400, sd = 1, effect 0.14: noncentrality 0.14 * 20 = 2.8; with z_0.975 = 1.96,
    # power ~ Phi(2.8 - 1.96) + Phi(-2.8 - 1.96) = Phi(0.84) + ~1e-6 = 0.7995; t(399) is a
    # little wider than z, so a little less
    assert power(1.0, 400, 0.14, 0.05, 1) == pytest.approx(0.7995, abs=0.003)


def test_power_stays_finite_far_in_the_tail():
    # scipy's nct.cdf gives NaN at e.g. (-4.31, df 4, ncp 8): the lower tail is taken from sf
    effects = np.linspace(0, 0.2, 401)
    got = [power(0.006585, 5, e, 0.05, 4) for e in effects]
    assert np.isfinite(got).all() and np.all(np.diff(got) >= 0) and got[-1] == pytest.approx(1)


def test_power_refuses_what_has_no_answer():
    with pytest.raises(ValueError, match="sd must be a positive number"):
        power(0.0, 5, 0.01, 0.05, 4)
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        power(0.01, 1, 0.01, 0.05, 4)


def test_seeds_needed_matches_the_published_sample_size():
    # R pwr: pwr.t.test(d = 0.5, sig.level = 0.05, power = 0.8, type = "one.sample") gives
    # n = 33.367, so 34 (G*Power: actual power 0.8078 at 34)
    assert seeds_needed(1.0, 0.5, 0.05, 1) == 34
    assert power(1.0, 34, 0.5, 0.05, 1) == pytest.approx(0.8078, abs=1e-4)
    assert power(1.0, 33, 0.5, 0.05, 1) < 0.8
    # R power.t.test(delta = 1, sd = 1, power = 0.8, type = "paired"): n = 9.94, so 10
    assert seeds_needed(1.0, 1.0, 0.05, 1) == 10
    assert seeds_needed(1.0, 0.01, 0.05, 1, max_n=1000) is None     # needs ~78,500 seeds
    # 2 seeds (1 df, critical t 12.71): an effect of 30 sd has noncentrality 42
    assert power(1.0, 2, 30.0, 0.05, 1) > 0.8 and seeds_needed(1.0, 30.0, 0.05, 1) == 2


# ---- verdicts ------------------------------------------------------------------------------

@pytest.mark.parametrize("interval, said", [
    ([0.012, 0.03], "helps by at least the target"),      # wholly beyond +1 pp
    ([-0.05, -0.011], "hurts by at least the target"),
    ([0.002, 0.03], "helps"),                             # excludes 0, reaches below +1 pp
    ([-0.03, -0.001], "hurts"),
    ([-0.004, 0.009], "equivalent within the target"),    # inside (-1, +1) pp
    ([0.001, 0.009], "equivalent within the target"),     # inside, though it excludes 0
    ([-0.004, 0.02], "not decided yet"),                  # covers 0 and reaches past +1 pp
    ([-0.02, 0.02], "not decided yet"),
    ([-0.01, 0.005], "not decided yet"),                  # touching -1 pp is not inside
    (None, "not decided yet"),                            # no interval (one seed, no spread)
])
def test_a_verdict_is_read_off_the_interval(interval, said):
    assert verdict(interval, 0.01) == said and said in VERDICTS


def test_a_verdict_needs_a_positive_target():
    with pytest.raises(ValueError, match="target must be a positive difference"):
        verdict([0.0, 0.1], 0.0)


def test_the_planning_sd_pools_the_comparisons_and_its_upper_limit_is_the_chi2_one():
    # two comparisons of 6 seeds, SDs 1 and 2: pooled sqrt((5 + 20) / 10) = 1.5811; 80% upper
    # limit s sqrt(10 / chi2_0.2(10)) with chi2_0.2(10) = 6.1791: 1.5811 * 1.2722 = 2.0114
    got = pooled_sd_upper([1.0, 2.0, None, 0.0], [6, 6, 6, 6])
    assert got["sd"] == pytest.approx(1.5811, abs=1e-4) and got["df"] == 10
    assert got["upper"] == pytest.approx(2.0114, abs=1e-3)
    assert pooled_sd_upper([None, 0.0], [6, 6]) is None
    # coverage: the limit is above the true SD in ~80% of simulated studies
    rng = np.random.default_rng(0)
    above = [pooled_sd_upper([rng.normal(0, 1, 6).std(ddof=1) for _ in range(4)],
                             [6] * 4)["upper"] > 1.0 for _ in range(4000)]
    assert np.mean(above) == pytest.approx(0.8, abs=0.02)


def test_variance_components_recover_known_shares():
    # d = seed effect + image effect + noise with sds 0.1, 0.1, 2 on 200 seeds x 400 images.
    # Shares of Var(mean d): var(seed effects) / 200 and var(image effects) / 400 (the drawn
    # effects' sample variances), 2^2 / 80000 = 5e-5. The noise adds as much again to each
    # mean square (E[ms_seed] = 400 var_s + 4 = ~4 + 4): an estimate that kept it would be
    # 2x off; the estimates' own error here is ~15% (60 simulated tables).
    rng = np.random.default_rng(0)
    seed_fx, image_fx = rng.normal(0, 0.1, (200, 1)), rng.normal(0, 0.1, (1, 400))
    d = seed_fx + image_fx + rng.normal(0, 2.0, (200, 400))
    got = variance_components(d, np.zeros_like(d))
    assert got["interaction"] == pytest.approx(5e-5, rel=0.02)          # 79,401 df
    assert got["seeds"] == pytest.approx(seed_fx.var(ddof=1) / 200, rel=0.5)
    assert got["images"] == pytest.approx(image_fx.var(ddof=1) / 400, rel=0.5)
    assert got["se"] ** 2 == pytest.approx(sum(v for k, v in got.items() if k != "se"))


# ---- compact predictions -------------------------------------------------------------------

@pytest.mark.parametrize("n_classes", [1, 10, 256, 257, 65536])
def test_predictions_round_trip(n_classes):
    pred = np.random.default_rng(0).integers(0, n_classes, 3000)
    pred[:2] = [0, n_classes - 1]                        # both ends of the range
    s = encode_predictions(pred, n_classes)
    assert s.startswith("u1:" if n_classes <= 256 else "u2:")
    assert np.array_equal(decode_predictions(s), pred)
    assert decode_predictions(encode_predictions(np.array([], int), 10)).size == 0


def test_cifar10_predictions_take_a_few_kilobytes():
    # worst case, uniformly random ids: log2(10) bits = 4.2 KB of information; zlib of one
    # byte per id gets ~5.1 KB, base64 makes it ~6.8 KB
    pred = np.random.default_rng(0).integers(0, 10, 10_000)
    assert 4_000 < len(encode_predictions(pred, 10)) < 7_000


def test_encoding_refuses_what_is_no_class_id():
    for bad, n_classes in [(np.array([0, 10]), 10), (np.array([-1, 2]), 10),
                           (np.array([0, 1]), 70_000)]:
        with pytest.raises(ValueError, match=r"class ids must lie in \[0, n_classes\)"):
            encode_predictions(bad, n_classes)
    with pytest.raises(ValueError, match="1-D integer array"):
        encode_predictions(np.array([0.5, 1.0]), 10)


def payload(raw: bytes, code: str = "u1", n_classes: int = 10) -> str:
    return f"{code}:{n_classes}:{base64.b64encode(raw).decode()}"


@pytest.mark.parametrize("s, problem", [
    ("u1:10:not*base64!", "not base64"),
    ("u1:10:é", "not base64"),
    ("x9:10:AAAA", "expected 'u1:<n_classes>:<base64>'"),
    ("u1:ten:AAAA", "expected 'u1:<n_classes>:<base64>'"),
    ("u1:10", "truncated data or trailing bytes"),                  # empty payload
    (payload(b"plain bytes"), "not zlib data"),
    (payload(zlib.compress(bytes(100))[:-4]), "truncated data or trailing bytes"),
    (payload(zlib.compress(bytes(100)) + b"x"), "truncated data or trailing bytes"),
    (payload(zlib.compress(bytes([3, 12]))), r"a class id >= n_classes=10"),
    (payload(zlib.compress(bytes(3)), "u2"), "truncated data or trailing bytes"),  # odd length
])
def test_decoding_refuses_malformed_input(s, problem):
    with pytest.raises(ValueError, match=problem):
        decode_predictions(s)


def test_decoding_is_bounded():
    assert decode_predictions(encode_predictions(np.zeros(1000, int), 10), max_len=1000).size \
        == 1000
    with pytest.raises(ValueError, match="more than max_len=999 predictions"):
        decode_predictions(encode_predictions(np.zeros(1000, int), 10), max_len=999)
    # 100 MB of zeros deflate to ~100 KB: refused while inflating, at max_len + 1 bytes
    bomb = payload(zlib.compress(bytes(100_000_000), 9))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="more than max_len=1000000 predictions"):
            decode_predictions(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000                         # never the 100 MB it would inflate to
    # a string longer than any encoding of max_len ids is refused before decoding
    with pytest.raises(ValueError, match="characters is more than 10 predictions can take"):
        decode_predictions("u1:10:" + "A" * 1000, max_len=10)


def test_correctness_compares_predictions_with_labels():
    assert correctness(np.array([1, 2, 3]), np.array([1, 0, 3])).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="two 1-D arrays of one length"):
        correctness(np.array([1, 2]), np.array([1, 2, 3]))
