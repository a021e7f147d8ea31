"""Batches straight from the prepared uint8 arrays: no per-sample Python work, no workers.

The whole prepared CIFAR-10 is ~180 MB as uint8, so it lives in memory; on a GPU it is moved to
the device once and batches are indexed there (augvit/training.py). Augmentation happens on the
batch, in the model (augvit/augment), not here.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from augvit.data.classnames import check_class_names
from augvit.io import load_arrays, load_json
from augvit.seeding import seed_for


def load_split(prepared: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,3,S,S) uint8 images and (N,) int64 labels of one prepared split."""
    arrays = load_arrays(prepared / f"{split}.npz")
    return torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"])


def load_classes(prepared: Path) -> list[str]:
    """The class names, checked again: data/prepared may come from a DVC remote."""
    classes = load_json(prepared / "meta.json")["classes"]
    check_class_names(classes, str(prepared / "meta.json"))
    return classes


class ArrayBatches:
    """An iterable of (images, labels) batches over in-memory tensors.

    shuffle: a new permutation each epoch, from (seed, epoch) alone, so a resumed run sees the
    same order. With `world` > 1 each rank takes its own equal share (DDP). Eval batches are never
    shuffled and never drop the last partial batch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0,
                 epoch_fn: Callable[[], int] = lambda: 0, rank: int = 0, world: int = 1):
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.epoch_fn, self.rank, self.world = seed, epoch_fn, rank, world

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if self.shuffle:
            g = torch.Generator().manual_seed(seed_for(self.seed, self.epoch_fn(), 3))
            idx = torch.randperm(n, generator=g)
        else:
            idx = torch.arange(n)
        if self.world > 1:
            idx = idx[: n - n % self.world][self.rank::self.world]
        return idx.to(self.labels.device)

    def __len__(self) -> int:
        n = len(self.labels) // self.world
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices()
        for k in range(len(self)):
            sel = idx[k * self.batch_size:(k + 1) * self.batch_size]
            yield self.images[sel], self.labels[sel]
