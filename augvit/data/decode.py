"""Decode every image once into uint8 arrays, and split train/val (the `prepare` stage's work).

Output folder: train.npz, val.npz, test.npz, each `images` uint8 (N, 3, S, S) at the storage
size S = data.image_size (never upscaled to the model's input size: that happens per batch at
training time) and `labels` int64 (N,); plus meta.json (classes, counts, skipped files). The
train split is in a stratified order: every prefix is class-balanced, so a run of train size N
takes the first N.

Images that are grayscale, RGBA, palette or of another size are converted to RGB and resized.
An image that cannot be decoded is skipped, named in the log and in meta.json, and counted; if
more than 1% of a split cannot be decoded, the stage fails instead (the copy is likely broken).
"""
from __future__ import annotations

import io
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from augvit.data.sources import unpack
from augvit.io import StageError, atomic_path, load_arrays, load_json, save_arrays, save_json
from augvit.params import DataParams

MAX_SKIPPED_FRACTION = 0.01
CHUNK = 2000


class PrepareError(StageError):
    pass


def decode_one(blob: bytes, size: int) -> np.ndarray | None:
    """Encoded image -> (3, size, size) uint8, or None when it cannot be decoded."""
    try:
        with Image.open(io.BytesIO(blob)) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def _decode_chunk(args: tuple[list[bytes], int]) -> list[np.ndarray | None]:
    blobs, size = args
    return [decode_one(b, size) for b in blobs]


def decode_all(blobs: list[bytes], size: int, desc: str) -> list[np.ndarray | None]:
    chunks = [(blobs[i:i + CHUNK], size) for i in range(0, len(blobs), CHUNK)]
    workers = min(len(chunks), os.cpu_count() or 1)
    out: list[np.ndarray | None] = []
    bar = tqdm(total=len(blobs), desc=f"decode {desc}", unit="img", mininterval=2)
    if workers <= 1:
        results = map(_decode_chunk, chunks)
        pool = None
    else:
        pool = ProcessPoolExecutor(workers)
        results = pool.map(_decode_chunk, chunks)
    try:
        for res in results:
            out.extend(res)
            bar.update(len(res))
    finally:
        bar.close()
        if pool:
            pool.shutdown(cancel_futures=True)
    return out


def decode_split(raw: dict, size: int, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    enc = unpack(raw)
    decoded = decode_all(enc.blobs, size, split)
    bad = [enc.names[k] for k, d in enumerate(decoded) if d is None]
    if bad:
        print(f"prepare: {len(bad)} image(s) in {split} could not be decoded and were skipped: "
              f"{', '.join(bad[:10])}{' …' if len(bad) > 10 else ''}")
    if len(bad) > MAX_SKIPPED_FRACTION * len(decoded):
        raise PrepareError(f"prepare: {len(bad)} of {len(decoded)} images in {split} cannot be "
                           f"decoded (first: {bad[0]}); more than {MAX_SKIPPED_FRACTION:.0%} means "
                           "the data copy is broken. Fetch a fresh copy of data.source and rerun.")
    keep = [k for k, d in enumerate(decoded) if d is not None]
    images = np.stack([decoded[k] for k in keep]) if keep else np.zeros((0, 3, size, size), np.uint8)
    return images, enc.labels[keep], bad


def stratified_split(labels: np.ndarray, val_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): per class, a seeded shuffle; val gets round(n_c * val_fraction).

    The train indices come in a stratified order: the classes' shuffled indices taken in
    turn, so that every prefix of it is as balanced as the classes allow. A run with train
    size N takes the first N (augvit/training.py): a smaller size is a subset of a larger one.
    """
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    # rank of each index within its class, then order by (rank, class): round-robin
    keys = np.concatenate([np.arange(len(t)) for t in train_idx])
    classes = np.concatenate([np.full(len(t), k) for k, t in enumerate(train_idx)])
    order = np.lexsort((classes, keys))
    return np.concatenate(train_idx)[order], np.sort(np.concatenate(val_idx))


def prepare(data: DataParams, raw_dir: Path, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    source = load_json(raw_dir / "source.json")
    classes = source["classes"]
    train_images, train_labels, bad_train = decode_split(
        load_arrays(raw_dir / "train.npz"), data.image_size, "train")
    test_images, test_labels, bad_test = decode_split(
        load_arrays(raw_dir / "test.npz"), data.image_size, "test")
    counts = np.bincount(train_labels, minlength=len(classes))
    if (counts < 2).any():
        empty = [classes[c] for c in np.flatnonzero(counts < 2)]
        raise PrepareError(f"prepare: class(es) {empty} have fewer than 2 decodable train images; "
                           "each class needs images in train/ (and test/) to be split and learned.")
    tr, va = stratified_split(train_labels, data.val_fraction, data.seed)
    meta = {"classes": classes, "image_size": data.image_size,
            "counts": {"train": len(tr), "val": len(va), "test": len(test_labels)},
            "skipped": {"train": bad_train, "test": bad_test},
            "source": source}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        save_arrays(tmp / "train.npz", images=train_images[tr], labels=train_labels[tr])
        save_arrays(tmp / "val.npz", images=train_images[va], labels=train_labels[va])
        save_arrays(tmp / "test.npz", images=test_images, labels=test_labels)
        save_json(tmp / "meta.json", meta)
    print(f"prepare: {meta['counts']} at {data.image_size}x{data.image_size} "
          f"in {time.perf_counter() - t0:.1f}s")
    return meta
