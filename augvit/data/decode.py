"""Decode every image once into uint8 arrays, and split train/val (the `prepare` stage's work).

Output folder: train.npz, val.npz, test.npz, each `images` uint8 (N, 3, S, S) at the storage
size S = data.image_size (never upscaled to the model's input size: that happens per batch at
training time) and `labels` int64 (N,); plus meta.json (classes, counts, skipped files). The
train split is in a stratified order (every prefix is class-balanced); each run draws its own
seed's subset of it (augvit/data/subsets.py).

Images that are grayscale, RGBA, palette or of another size are converted to RGB and resized;
16-bit grey is scaled to 8 bits. An image that cannot be decoded is skipped, named in the log
and in meta.json, and counted; if more than 1% of a split cannot be decoded, the stage fails
instead (the copy is likely broken).

data/raw is checked again, as it may come from a DVC remote: class names, the arrays' claimed
sizes and offsets and labels, and each image's width x height against data.max_image_pixels
(from its header, before decoding). An image over that limit, or with 32-bit or float pixels,
fails the stage by name: it is a limit breach or an ambiguous file, not a broken one to skip.
"""
from __future__ import annotations

import io
import math
import os
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from augvit.data.archives import IMAGE_FORMATS, image_size, pixels_problem
from augvit.data.classnames import check_class_names
from augvit.data.sources import EncodedSplit, Limits, unpack
from augvit.data.subsets import interleave
from augvit.io import StageError, atomic_path, load_arrays, load_json, save_arrays, save_json
from augvit.params import DataParams
from augvit.text import printable

MAX_SKIPPED_FRACTION = 0.01
CHUNK = 2000
# Formats whose 16-bit grey PIL opens as mode I, in 0..65535 (PPM of any maxval is scaled).
SIXTEEN_BIT_AS_I = ("PNG", "PPM")
# The memory decoding one pixel takes, in bytes: 8-bit images PIL holds in 4 bytes a pixel
# (RGB(A), palette or grey, then RGB); 16-bit grey it holds as 32-bit integers, which scaling
# to 8 bits copies twice. data.max_image_pixels is a budget of 8-bit pixels: a 16-bit image
# may have a third of them.
BYTES_PER_PIXEL_8BIT, BYTES_PER_PIXEL_16BIT = 4, 12
RAW_ARRAYS = {f"{k}.npy" for k in ("bytes", "offsets", "labels", "names")}


class PrepareError(StageError):
    pass


def decode_one(blob: bytes, size: int, name: str = "image",
               max_pixels: int = Limits().max_image_pixels) -> np.ndarray | None:
    """Encoded image -> (3, size, size) uint8, or None when it cannot be decoded. An image over
    max_pixels is no undecodable file to skip but a limit breach: refused by name, from its
    header, before anything is decoded."""
    wh = image_size(blob)
    if wh is None:
        return None
    if wh[0] * wh[1] > max_pixels:
        raise PrepareError("prepare: " + pixels_problem(name, wh, max_pixels))
    try:
        with Image.open(io.BytesIO(blob), formats=IMAGE_FORMATS) as im:
            _check_budget(im, name, max_pixels)
            return _to_rgb(im, size, name)
    except PrepareError:
        raise
    except Image.DecompressionBombError as e:       # a later frame larger than the header's
        raise PrepareError(f"prepare: {name!r} holds a frame over data.max_image_pixels = "
                           f"{max_pixels:,} ({e}). Remove it, or raise data.max_image_pixels if "
                           "such images belong in the dataset. Nothing was written.") from None
    except Exception:  # noqa: BLE001 - PIL raises many kinds on a malformed file: skip it
        return None


def _sixteen_bit(im: Image.Image) -> bool:
    return (im.mode.startswith("I;16") and im.mode[4:] in ("", "L", "B", "N")) or \
        (im.mode == "I" and im.format in SIXTEEN_BIT_AS_I)


def _check_budget(im: Image.Image, name: str, max_pixels: int) -> None:
    """Refuse, from the header, an image whose decoding would take more memory than
    data.max_image_pixels 8-bit pixels do."""
    if not _sixteen_bit(im):
        return
    w, h = im.size
    need, budget = w * h * BYTES_PER_PIXEL_16BIT, max_pixels * BYTES_PER_PIXEL_8BIT
    if need > budget:
        raise PrepareError(f"prepare: {name!r} is a 16-bit {im.format} image of {w} x {h}: "
                           f"decoding it takes {BYTES_PER_PIXEL_16BIT} bytes a pixel, "
                           f"{need / 1e6:,.0f} MB, over the {budget / 1e6:,.0f} MB that "
                           f"data.max_image_pixels = {max_pixels:,} 8-bit pixels may take "
                           f"({BYTES_PER_PIXEL_8BIT} bytes each). Remove it, convert it to 8 "
                           "bits, or raise data.max_image_pixels. Nothing was written.")


def _to_rgb(im: Image.Image, size: int, name: str) -> np.ndarray:
    """RGB at size x size. 16-bit grey is scaled to 8 bits (PIL's own conversion clips it);
    32-bit integer or float pixels have no single meaning in 8 bits: refused by name."""
    if _sixteen_bit(im):
        grey = np.array(im, dtype=np.int32)             # scaled in place: 4 bytes a pixel
        if grey.min() < 0 or grey.max() > 65535:
            raise _no_8bit(name, im)
        grey += 128
        grey //= 257
        im = Image.fromarray(grey.astype(np.uint8), "L")
    elif im.mode in ("I", "F") or im.mode.startswith("I;"):
        raise _no_8bit(name, im)
    im = im.convert("RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def _no_8bit(name: str, im: Image.Image) -> PrepareError:
    return PrepareError(f"prepare: {name!r} is a {im.format} image of mode {im.mode} (32-bit "
                        "integer or floating-point pixels), which has no one meaning in 8 bits. "
                        "Convert it to an 8- or 16-bit PNG or a JPEG and rerun. Nothing was "
                        "written.")


def _decode_chunk(args: tuple[list[bytes], list[str], int, int]) -> list[np.ndarray | None]:
    blobs, names, size, max_pixels = args
    # PIL's own guard, at the same limit: it still errs above 2x that on what the header check
    # cannot see (a GIF frame larger than the image).
    guard, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        return [decode_one(b, size, n, max_pixels) for b, n in zip(blobs, names)]
    finally:
        Image.MAX_IMAGE_PIXELS = guard


def decode_all(enc: EncodedSplit, size: int, max_pixels: int,
               desc: str) -> list[np.ndarray | None]:
    chunks = [(enc.blobs[i:i + CHUNK], enc.names[i:i + CHUNK], size, max_pixels)
              for i in range(0, len(enc.blobs), CHUNK)]
    workers = min(len(chunks), os.cpu_count() or 1)
    out: list[np.ndarray | None] = []
    bar = tqdm(total=len(enc.blobs), desc=f"decode {desc}", unit="img", mininterval=2)
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


def decode_split(raw_dir: Path, split: str, classes: list[str], size: int,
                 limits: Limits) -> tuple[np.ndarray, np.ndarray, list[str]]:
    enc = unpack(load_raw(raw_dir / f"{split}.npz", limits), len(classes),
                 f"prepare: {raw_dir / f'{split}.npz'}", PrepareError)
    decoded = decode_all(enc, size, limits.max_image_pixels, split)
    bad = [enc.names[k] for k, d in enumerate(decoded) if d is None]
    if bad:
        print(f"prepare: {len(bad)} image(s) in {split} could not be decoded and were skipped: "
              f"{', '.join(printable(b) for b in bad[:10])}{' …' if len(bad) > 10 else ''}")
    if len(bad) > MAX_SKIPPED_FRACTION * len(decoded):
        raise PrepareError(f"prepare: {len(bad)} of {len(decoded)} images in {split} cannot be "
                           f"decoded (first: {bad[0]!r}); more than {MAX_SKIPPED_FRACTION:.0%} means "
                           "the data copy is broken. Fetch a fresh copy of data.source and rerun.")
    keep = [k for k, d in enumerate(decoded) if d is not None]
    images = (np.stack([decoded[k] for k in keep]) if keep
              else np.zeros((0, 3, size, size), np.uint8))
    return images, enc.labels[keep], bad


def load_raw(path: Path, limits: Limits) -> dict[str, np.ndarray]:
    """data/raw/<split>.npz: only the four arrays download writes, each claiming no more than
    data.max_total_mb. It may come from a DVC remote, and a small .npz can claim gigabytes."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
        odd = [i.filename for i in infos if i.filename not in RAW_ARRAYS]
        big = [i for i in infos if i.file_size > limits.total_bytes + (1 << 20)]
        if odd or big:
            found = (f"holds {odd[0]!r}, not one of {sorted(RAW_ARRAYS)}" if odd else
                     f"array {big[0].filename!r} claims {big[0].file_size:,} bytes, more than "
                     f"data.max_total_mb = {limits.max_total_mb:g} MB allows")
            raise PrepareError(
                f"prepare: {path}: {found}. The raw data is not the download stage's: rerun it "
                "(`dvc repro download`) or pull a good copy"
                + ("" if odd else ", or raise data.max_total_mb if the dataset is that large")
                + ". Nothing was written.")
        return load_arrays(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise PrepareError(f"prepare: {path} cannot be read ({type(e).__name__}: {e}). Rerun "
                           "the download stage (`dvc repro download`) or pull a good copy. "
                           "Nothing was written.") from None


def stratified_split(labels: np.ndarray, val_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): per class, a seeded shuffle; val gets round(n_c * val_fraction).

    The train indices come in a stratified order: the classes' shuffled indices taken in
    turn, so that every prefix of it is as balanced as the classes allow. (Each run then
    draws its own seed's subset of the train split: augvit/data/subsets.py.)
    """
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return interleave(train_idx), np.sort(np.concatenate(val_idx))


def prepare(data: DataParams, raw_dir: Path, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    limits = Limits.of(data)
    source = load_json(raw_dir / "source.json")
    classes = source.get("classes") if isinstance(source, dict) else None
    # data/raw may come from a DVC remote: its class names are checked again, as download does.
    check_class_names(classes, f"prepare: {raw_dir / 'source.json'}", PrepareError)
    train_images, train_labels, bad_train = decode_split(raw_dir, "train", classes,
                                                         data.image_size, limits)
    test_images, test_labels, bad_test = decode_split(raw_dir, "test", classes,
                                                      data.image_size, limits)
    counts = np.bincount(train_labels, minlength=len(classes))
    if (counts < 2).any():
        empty = [classes[c] for c in np.flatnonzero(counts < 2)]
        raise PrepareError(f"prepare: class(es) {empty} have fewer than 2 decodable train images; "
                           "each class needs images in train/ (and test/) to be split and learned.")
    tr, va = stratified_split(train_labels, data.val_fraction, data.seed)
    if len(va) == 0:
        raise empty_val_error(data.val_fraction, counts)
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


def empty_val_error(val_fraction: float, counts: np.ndarray) -> PrepareError:
    """A run evaluates on val after every epoch: with no images there is nothing to evaluate."""
    n, most = int(counts.min()), int(counts.max())
    least = math.floor(500 / n + 1) / 1000          # just over 0.5 / n: round(n * f) >= 1
    while int(round(n * least)) < 1:
        least += 0.001
    return PrepareError(
        f"prepare: data.val_fraction = {val_fraction:g} gives 0 validation images (each class "
        f"keeps round(n x {val_fraction:g}) of its n = {n if n == most else f'{n} to {most}'} "
        "train images). "
        f"Set data.val_fraction to at least {least:.3f} (one image of every class; e.g. "
        f"`dvc exp run -S data.val_fraction={least:.3f}`). Nothing was written.")
