"""Each seed's training subset: class-balanced, nested across sizes, its own for each seed."""
from __future__ import annotations

import numpy as np

from augvit.data.subsets import stratified_order, train_subset

LABELS = np.repeat(np.arange(10), [500] * 9 + [300])       # one class smaller than the rest


def test_a_subset_is_class_balanced_and_nested_across_sizes():
    for seed in (0, 1):
        small, large = train_subset(LABELS, 500, seed), train_subset(LABELS, 1000, seed)
        assert np.bincount(LABELS[small], minlength=10).tolist() == [50] * 10
        assert set(small) <= set(large) and len(set(large)) == 1000


def test_each_seed_draws_its_own_subset_and_the_same_seed_the_same_one():
    a, b = train_subset(LABELS, 500, 0), train_subset(LABELS, 500, 1)
    assert np.array_equal(a, train_subset(LABELS, 500, 0))
    overlap = len(set(a) & set(b)) / 500
    assert overlap < 0.2, overlap                # ~10% by chance for 500 of 4,800


def test_every_prefix_is_balanced_while_every_class_has_images():
    order = stratified_order(LABELS, np.random.default_rng(3))
    for n in (10, 95, 2990):
        counts = np.bincount(LABELS[order[:n]], minlength=10)
        assert counts.max() - counts.min() <= 1, (n, counts)
    assert sorted(order.tolist()) == list(range(len(LABELS)))     # a permutation
