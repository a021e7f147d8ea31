"""Batches straight from the prepared uint8 arrays: no per-sample Python work, no workers.

The whole prepared CIFAR-10 is ~180 MB as uint8, so it lives in memory; on a GPU it is moved to
the device once and batches are indexed there. Augmentation happens on the batch, in the model
(stages/augment.py), not here.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import torch

from stages.io import load_arrays, load_json
from stages.model import seed_for


def load_split(prepared: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,3,S,S) uint8 images and (N,) int64 labels of one prepared split."""
    arrays = load_arrays(prepared / f"{split}.npz")
    return torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["labels"])


def load_classes(prepared: Path) -> list[str]:
    return load_json(prepared / "meta.json")["classes"]


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


class ArrayDataModule(L.LightningDataModule):
    """Train and val batches of the prepared arrays; moved to the GPU once when there is one."""

    def __init__(self, prepared: Path, batch_size: int, eval_batch_size: int, seed: int):
        super().__init__()
        self.prepared, self.batch_size = prepared, batch_size
        self.eval_batch_size, self.seed = eval_batch_size, seed
        self.train = load_split(prepared, "train")
        self.val = load_split(prepared, "val")

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device
        if device.type == "cuda":
            self.train = tuple(t.to(device) for t in self.train)
            self.val = tuple(t.to(device) for t in self.val)

    def _world(self) -> tuple[int, int]:
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> ArrayBatches:
        rank, world = self._world()
        # train.batch_size is the global batch: each of `world` processes takes its share.
        return ArrayBatches(*self.train, self.batch_size // world, shuffle=True, drop_last=True,
                            seed=self.seed, epoch_fn=lambda: self.trainer.current_epoch,
                            rank=rank, world=world)

    def val_dataloader(self) -> ArrayBatches:
        rank, world = self._world()
        return ArrayBatches(*self.val, self.eval_batch_size, rank=rank, world=world)
