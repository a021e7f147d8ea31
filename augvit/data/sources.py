"""Where CIFAR-10 comes from: a Hugging Face dataset id, or a local image-folder copy.

Every source is read into the same shape, `EncodedSplit`: the encoded image files (JPEG/PNG
bytes, not decoded yet), their labels and names. Decoding is the prepare stage's job.

The raw data format (data/raw/<split>.npz) lives here too: `pack`/`unpack` turn a split into
a few arrays (the files' bytes concatenated, offsets, labels, names) and back.

Local layout (a folder, or a .tar/.tar.gz/.tgz/.zip archive of one, optionally under a single
top-level folder):  train/<class>/<image>, test/<class>/<image>. Class order = sorted names.
"""
from __future__ import annotations

import hashlib
import zlib
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from augvit.io import StageError

SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


class SourceError(StageError):
    """The data source is missing, unreadable or not laid out as expected."""


@dataclass
class EncodedSplit:
    blobs: list[bytes]
    labels: np.ndarray          # (N,) int64
    names: list[str]            # "<class>/<file>" of each image, for error messages


def is_local(source: str) -> bool:
    """A source is local when it looks like a path; otherwise it is a hub dataset id."""
    return (source.startswith((".", "/", "~")) or source.endswith(ARCHIVE_SUFFIXES)
            or Path(source).expanduser().exists())


def _iter_dir(root: Path) -> Iterator[tuple[str, bytes | None]]:
    """(relative path, bytes) of every file, and (relative path, None) of every folder."""
    for p in sorted(root.rglob("*")):
        if p.is_file():
            yield p.relative_to(root).as_posix(), p.read_bytes()
        elif p.is_dir():
            yield p.relative_to(root).as_posix(), None


def _iter_tar(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if m.isfile():
                    f = tar.extractfile(m)
                    yield m.name, f.read() if f else b""
                elif m.isdir():
                    yield m.name.rstrip("/"), None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise SourceError(f"data.source {str(path)!r}: the archive is truncated or corrupt "
                          f"({type(e).__name__}: {e}). Fetch a fresh copy and rerun.") from None


def _iter_zip(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    yield info.filename.rstrip("/"), None
                else:
                    yield info.filename, zf.read(info)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise SourceError(f"data.source {str(path)!r}: the archive is truncated or corrupt "
                          f"({type(e).__name__}: {e}). Fetch a fresh copy and rerun.") from None


def iter_local_files(path: Path) -> Iterator[tuple[str, bytes | None]]:
    if not path.exists():
        raise SourceError(f"data.source {str(path)!r}: no such file or folder. Point data.source "
                          "at an image-folder directory or a .tar/.tar.gz/.zip archive of one, "
                          "or at a Hugging Face dataset id such as uoft-cs/cifar10.")
    if path.is_dir():
        return _iter_dir(path)
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _iter_tar(path)
    if name.endswith(".zip"):
        return _iter_zip(path)
    raise SourceError(f"data.source {str(path)!r}: not a folder nor a supported archive; "
                      f"supported: a folder, {', '.join(ARCHIVE_SUFFIXES)}")


def read_local(path: Path) -> tuple[dict[str, EncodedSplit], list[str]]:
    """Read an image-folder copy (folder or archive) into encoded splits and class names."""
    files: dict[str, dict[str, list[tuple[str, bytes]]]] = {s: {} for s in SPLITS}
    for name, blob in iter_local_files(path):
        parts = PurePosixPath(name).parts
        # Accept one optional top-level folder (cifar10/train/cat/0001.jpg).
        if len(parts) >= 3 and parts[0] not in SPLITS and parts[1] in SPLITS:
            parts = parts[1:]
        if len(parts) < 2 or parts[0] not in SPLITS or parts[1].startswith("."):
            continue
        split, cls = parts[0], parts[1]
        if len(parts) == 2 and blob is not None:       # a stray file beside the class folders
            continue
        images = files[split].setdefault(cls, [])      # a class folder, even an empty one
        if len(parts) == 3 and blob is not None and not parts[2].startswith(".") and \
                PurePosixPath(parts[2]).suffix.lower() in IMAGE_SUFFIXES:
            images.append((f"{split}/{cls}/{parts[2]}", blob))
    return _to_splits(str(path), files)


def _to_splits(where: str, files: dict) -> tuple[dict[str, EncodedSplit], list[str]]:
    missing = [s for s in SPLITS if not any(files[s].values())]
    if missing:
        raise SourceError(f"data.source {where!r}: no images under {', '.join(missing)}/. "
                          "Expected train/<class>/<image> and test/<class>/<image>.")
    train_cls, test_cls = sorted(files["train"]), sorted(files["test"])
    if train_cls != test_cls:
        only_train = sorted(set(train_cls) - set(test_cls))
        only_test = sorted(set(test_cls) - set(train_cls))
        raise SourceError(f"data.source {where!r}: class folders differ between train/ and test/ "
                          f"(only in train: {only_train}, only in test: {only_test}). "
                          "Both splits need the same class folders.")
    classes = train_cls
    empty = [f"{s}/{c}/" for s in SPLITS for c in classes if not files[s][c]]
    if empty:
        raise SourceError(f"data.source {where!r}: class folder(s) {', '.join(empty)} hold no "
                          f"images ({', '.join(sorted(IMAGE_SUFFIXES))}). Every class needs "
                          "images in both splits: add them or remove the class from both.")
    splits = {}
    for s in SPLITS:
        blobs, labels, names = [], [], []
        for label, cls in enumerate(classes):
            for name, blob in sorted(files[s][cls]):
                blobs.append(blob)
                labels.append(label)
                names.append(name)
        splits[s] = EncodedSplit(blobs, np.asarray(labels, dtype=np.int64), names)
    return splits, classes


def read_hub(dataset_id: str) -> tuple[dict[str, EncodedSplit], list[str]]:
    """Download a Hugging Face image-classification dataset (train/test splits)."""
    try:
        import datasets
        ds = datasets.load_dataset(dataset_id)
    except Exception as e:  # noqa: BLE001 - every failure here means "could not get it"
        raise SourceError(
            f"data.source {dataset_id!r}: could not load this Hugging Face dataset "
            f"({type(e).__name__}: {str(e)[:300]}). No network may be reachable from here. "
            "Use a local copy instead: set data.source to an image-folder directory or archive "
            "(train/<class>/<image>, test/<class>/<image>), e.g. "
            "`dvc exp run -S data.source=../shared/data/cifar10-jpeg.tar.gz`.") from None
    missing = [s for s in SPLITS if s not in ds]
    if missing:
        raise SourceError(f"data.source {dataset_id!r}: the dataset has no {missing} split(s); "
                          f"it has {list(ds)}.")
    image_col = next(k for k, f in ds["train"].features.items()
                     if type(f).__name__ == "Image")
    label_col = next(k for k, f in ds["train"].features.items()
                     if type(f).__name__ == "ClassLabel")
    classes = list(ds["train"].features[label_col].names)
    splits = {}
    for s in SPLITS:
        part = ds[s].cast_column(image_col, datasets.Image(decode=False))
        blobs = [img["bytes"] for img in part[image_col]]
        labels = np.asarray(part[label_col], dtype=np.int64)
        names = [f"{s}/{classes[y]}/{i:05d}" for i, y in enumerate(labels)]
        splits[s] = EncodedSplit(blobs, labels, names)
    return splits, classes


def content_checksum(splits: dict[str, EncodedSplit], classes: list[str]) -> str:
    """sha256 over classes, labels and image bytes, independent of the container format."""
    h = hashlib.sha256("\n".join(classes).encode())
    for s in SPLITS:
        h.update(s.encode())
        h.update(splits[s].labels.tobytes())
        for blob in splits[s].blobs:
            h.update(len(blob).to_bytes(8, "little"))
            h.update(blob)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pack(split: EncodedSplit) -> dict[str, np.ndarray]:
    """An encoded split -> the arrays of data/raw/<split>.npz."""
    sizes = np.fromiter((len(b) for b in split.blobs), dtype=np.int64, count=len(split.blobs))
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    return {"bytes": np.frombuffer(b"".join(split.blobs), dtype=np.uint8),
            "offsets": offsets, "labels": split.labels, "names": np.asarray(split.names)}


def unpack(arrays: dict[str, np.ndarray]) -> EncodedSplit:
    data, off = arrays["bytes"], arrays["offsets"]
    blobs = [data[off[k]:off[k + 1]].tobytes() for k in range(len(off) - 1)]
    return EncodedSplit(blobs, arrays["labels"], [str(n) for n in arrays["names"]])
