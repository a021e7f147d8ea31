"""Batches straight from the prepared uint8 arrays: no per-sample Python work, no workers.

The whole prepared CIFAR-10 is ~180 MB as uint8, so it lives in memory; on a GPU it is moved to
the device once and batches are indexed there (augvit/training.py). Augmentation happens on the
batch, in the model (augvit/augment), not here.
"""
from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from augvit.data.classnames import check_class_names
from augvit.io import StageError, load_arrays, load_json
from augvit.seeding import seed_for


class PreparedDataError(StageError):
    """A prepared split that is not what the prepare stage writes (a broken or hostile copy)."""


def load_split(prepared: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,3,S,S) uint8 images and (N,) int64 labels of one prepared split.

    data/prepared may come from a DVC remote, so the file is checked before it is used: exactly
    the two arrays prepare writes, stored uncompressed (nothing inflates beyond the file's own
    size), of prepare's dtypes and shapes (nothing is cast), labels naming meta.json's classes."""
    path = prepared / f"{split}.npz"
    where = f"{path}"
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
        names = sorted(i.filename for i in infos)
        if names != ["images.npy", "labels.npy"]:
            raise _bad(where, f"holds {names}, not ['images.npy', 'labels.npy']")
        packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
        if packed:
            raise _bad(where, f"{packed[0]!r} is compressed; prepare stores its arrays "
                              "uncompressed")
        arrays = load_arrays(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _bad(where, f"cannot be read ({type(e).__name__}: {e})") from None
    meta = load_json(prepared / "meta.json")
    size, n_classes = meta.get("image_size"), len(load_classes(prepared))
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, size, size):
        raise _bad(where, f"'images' is {images.dtype} {images.shape}; prepare writes uint8 "
                          f"(N, 3, {size}, {size}) for meta.json's image_size {size}")
    if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
        raise _bad(where, f"'labels' is {labels.dtype} {labels.shape}; prepare writes int64 "
                          f"({images.shape[0]},), one per image")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise _bad(where, f"'labels' run from {labels.min()} to {labels.max()}, outside the "
                          f"{n_classes} classes of meta.json")
    return torch.from_numpy(images), torch.from_numpy(labels)


def _bad(where: str, what: str) -> PreparedDataError:
    return PreparedDataError(f"{where}: {what}. This is not the prepare stage's output (a broken "
                             "or tampered copy): rebuild it with `dvc repro --force prepare` "
                             "or pull a good copy.")


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
