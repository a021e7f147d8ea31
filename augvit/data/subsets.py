"""Which training images a run sees: each seed draws its own stratified subset of the train split.

The seeds of a study replicate the whole experiment, data included: seed k's subset of size N is
the first N of seed k's stratified order of the train split, so it is class-balanced, shared by
every version and backbone setting of that seed (the comparisons stay paired), and nested across
sizes (seed k's 500 images are among its 1,000). Validation and test never change.
"""
from __future__ import annotations

import numpy as np

from augvit.seeding import seed_for

SUBSET_STREAM = 4          # seed_for(seed, SUBSET_STREAM): apart from init, order and draws


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of `labels` in an order whose every prefix is as class-balanced as the classes
    allow: each class's indices shuffled, then taken in turn (rank within class, then class)."""
    per_class = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        per_class.append(idx)
    return interleave(per_class)


def interleave(per_class: list[np.ndarray]) -> np.ndarray:
    """The classes' index lists taken in turn (rank within class, then class): every prefix
    is as class-balanced as the classes allow."""
    ranks = np.concatenate([np.arange(len(t)) for t in per_class])
    classes = np.concatenate([np.full(len(t), k) for k, t in enumerate(per_class)])
    return np.concatenate(per_class)[np.lexsort((classes, ranks))]


def train_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """The indices (into the train split) of seed `seed`'s `size` training images, sorted."""
    order = stratified_order(labels, np.random.default_rng(seed_for(seed, SUBSET_STREAM)))
    return np.sort(order[:size])
