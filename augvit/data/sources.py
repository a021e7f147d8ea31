"""Where CIFAR-10 comes from: a Hugging Face dataset id, or a local image-folder copy.

Every source is read into the same shape, `EncodedSplit`: the encoded image files (JPEG/PNG
bytes, not decoded yet), their labels and names. Decoding is the prepare stage's job.

The raw data format (data/raw/<split>.npz) lives here too: `pack`/`unpack` turn a split into
a few arrays (the files' bytes concatenated, offsets, labels, names) and back.

Local layout (a folder, or a .tar/.tar.gz/.tgz/.zip archive of one, optionally under a single
top-level folder):  train/<class>/<image>, test/<class>/<image>. Class order = sorted names.

A source is untrusted, and held within `Limits` (params.yaml data.max_image_mb, max_total_mb,
max_image_pixels): a member is placed by its name before any of its bytes are read (only images
under train/<class>/ and test/<class>/ are read), each read is bounded, the running total is
checked as it grows, and each image's width x height is read from its header. Class names must
be plain names (augvit/data/classnames.py). How members are listed and read safely, and the
limits: augvit/data/archives.py.
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from augvit.data.archives import (ARCHIVE_SUFFIXES, Intake, Limits, SourceError,
                                  SourceUnavailable, iter_members)
from augvit.data.classnames import check_class_names
from augvit.io import StageError

SPLITS = ("train", "test")
PROGRESS_EVERY_S = 10.0       # a plain progress line this often when not on a terminal
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


@dataclass
class EncodedSplit:
    blobs: list[bytes]
    labels: np.ndarray          # (N,) int64
    names: list[str]            # "<class>/<file>" of each image, for error messages


def is_local(source: str) -> bool:
    """A source is local when it looks like a path; otherwise it is a hub dataset id."""
    return (source.startswith((".", "/", "~")) or source.endswith(ARCHIVE_SUFFIXES)
            or Path(source).expanduser().exists())


# ------------------------------------------------------------------ local copies

def place(name: str, is_dir: bool) -> tuple[str, str, str | None] | None:
    """(split, class, image file or None) of a member, from its name alone; None when it is
    outside the layout. Only members with an image file here are read at all."""
    parts = PurePosixPath(name).parts
    # Accept one optional top-level folder (cifar10/train/cat/0001.jpg).
    if len(parts) >= 3 and parts[0] not in SPLITS and parts[1] in SPLITS:
        parts = parts[1:]
    if len(parts) < 2 or parts[0] not in SPLITS or parts[1].startswith("."):
        return None
    if len(parts) == 2:                                # a stray file beside the class folders
        return (parts[0], parts[1], None) if is_dir else None
    image = (parts[2] if len(parts) == 3 and not is_dir and not parts[2].startswith(".")
             and PurePosixPath(parts[2]).suffix.lower() in IMAGE_SUFFIXES else None)
    return parts[0], parts[1], image                   # a class folder, even an empty one


def read_local(path: Path, limits: Limits = Limits()) -> tuple[dict[str, EncodedSplit],
                                                                list[str]]:
    """Read an image-folder copy (folder or archive) into encoded splits and class names."""
    where = f"data.source {str(path)!r}"
    files: dict[str, dict[str, list[tuple[str, bytes]]]] = {s: {} for s in SPLITS}
    intake = Intake(where, limits)
    with ReadProgress(path.stat().st_size if path.is_file() else None) as progress:
        for m in iter_members(path):
            spot = place(m.name, m.is_dir)
            if spot is None:
                continue
            split, cls, image = spot
            if cls not in files[split]:
                check_class_names([cls], where, SourceError)
            images = files[split].setdefault(cls, [])
            if image is not None:
                images.append((f"{split}/{cls}/{image}", intake.read(m)))
                progress.step(m.at if progress.total else progress.read + m.size)
    return _to_splits(str(path), files)


class ReadProgress:
    """Bytes read from a local source (of the archive's size, with the time left; a folder's
    total is not known in advance): a bar on a terminal, otherwise a plain line every
    PROGRESS_EVERY_S seconds (CI and cluster logs)."""

    def __init__(self, total: int | None):
        from tqdm import tqdm
        self.total, self.read, self.images = total, 0, 0
        self.t0 = self.last = time.monotonic()
        self.bar = tqdm(total=total, unit="B", unit_scale=True, desc="download: reading",
                        mininterval=0.5, disable=not sys.stderr.isatty())

    def __enter__(self) -> ReadProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def step(self, read: int) -> None:
        self.images += 1
        self.bar.update(max(0, read - self.read))
        self.read = max(self.read, read)
        now = time.monotonic()
        if self.bar.disable and now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            print(f"download: {self.line(now - self.t0)}", flush=True)

    def line(self, elapsed: float) -> str:
        mb = f"{self.read / 1e6:,.1f} MB"
        if not self.total:
            return f"{self.images:,} images, {mb} read in {elapsed:.0f} s"
        share = min(self.read / self.total, 1.0)
        left = f", about {elapsed * (1 - share) / share:.0f} s left" if share > 0 else ""
        return (f"{self.images:,} images, {mb} of {self.total / 1e6:,.1f} MB read "
                f"({share:.0%}){left}")


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


# ------------------------------------------------------------------ Hugging Face

def read_hub(dataset_id: str, limits: Limits = Limits()) -> tuple[dict[str, EncodedSplit],
                                                                   list[str]]:
    """Download a Hugging Face image-classification dataset (train/test splits)."""
    ds = _load_hub(dataset_id)
    where = f"data.source {dataset_id!r}"
    missing = [s for s in SPLITS if s not in ds]
    if missing:
        raise SourceError(f"{where}: the dataset has no {missing} split(s); it has {list(ds)}.")
    kinds = {type(f).__name__: k for k, f in reversed(ds["train"].features.items())}
    if "Image" not in kinds or "ClassLabel" not in kinds:
        raise SourceError(f"{where}: the dataset needs an Image and a ClassLabel column; it has "
                          f"{dict(ds['train'].features)!r:.300}. Use an image-classification "
                          "dataset, or an image-folder copy.")
    classes = list(ds["train"].features[kinds["ClassLabel"]].names)
    check_class_names(classes, where, SourceError)
    intake = Intake(where, limits)
    splits = {s: _hub_split(ds[s], s, kinds["Image"], kinds["ClassLabel"], classes, intake)
              for s in SPLITS}
    return splits, classes


def _load_hub(dataset_id: str):
    if Path(dataset_id).is_dir():
        return _load_local_parquet(Path(dataset_id))
    try:
        import datasets
        return datasets.load_dataset(dataset_id)
    except Exception as e:  # noqa: BLE001 - every failure here means "could not get it"
        raise SourceUnavailable(
            f"data.source {dataset_id!r}: could not load this Hugging Face dataset "
            f"({type(e).__name__}: {str(e)[:300]}). No network may be reachable from here. "
            "Use a local copy instead: an image-folder directory or archive "
            "(train/<class>/<image>, test/<class>/<image>), e.g. "
            "`dvc exp run -S data.source=PATH`.") from None


# A local copy of a hub dataset: its parquet files are found here, inside its folder only, and
# handed to `datasets` by name, so its README cannot point the read anywhere else.
SPLIT_PATTERNS = ("{s}.parquet", "{s}-*.parquet", "**/{s}-*.parquet", "**/{s}/*.parquet",
                  "**/{s}.parquet")
# One column chunk is decompressed whole: its size from the file's footer, before any read.
MAX_PARQUET_CHUNK_MB = 256


def _load_local_parquet(folder: Path):
    import datasets
    files = local_data_files(folder)
    for paths in files.values():
        for f in paths:
            check_parquet_sizes(Path(f), f"data.source {str(folder)!r}")
    try:
        return datasets.load_dataset("parquet", data_files=files)
    except Exception as e:  # noqa: BLE001 - a broken copy, whatever `datasets` raises
        raise SourceError(f"data.source {str(folder)!r}: its parquet files cannot be read "
                          f"({type(e).__name__}: {str(e)[:300]}). Fetch a fresh copy and "
                          "rerun. Nothing was written.") from None


def local_data_files(folder: Path) -> dict[str, list[str]]:
    """Each split's parquet files: the README's `configs` data_files (its first config) or the
    hub's file-name convention, each resolved inside `folder` (no absolute path, no `..`, no
    URL, nothing a link takes out of it): a named error otherwise."""
    where, top = f"data.source {str(folder)!r}", folder.resolve()
    patterns = _readme_patterns(folder, where) or {
        s: [p.format(s=s) for p in SPLIT_PATTERNS] for s in SPLITS}
    files: dict[str, list[str]] = {}
    for split, pats in patterns.items():
        found: set[Path] = set()
        for pat in pats:
            if not isinstance(pat, str) or pat.startswith(("/", "~", "\\")) or "://" in pat \
                    or ".." in PurePosixPath(pat).parts or Path(pat).is_absolute():
                raise SourceError(f"{where}: its README's data_files name {pat!r:.200} for "
                                  f"{split!r:.40}: data files are read from inside the dataset "
                                  "folder only (relative paths, no `..`, no URL). Fix the "
                                  "README's configs and rerun. Nothing was written.")
            for f in folder.glob(pat):
                real = f.resolve()
                if not (real.is_relative_to(top) and real.is_file()):
                    raise SourceError(f"{where}: {f.relative_to(folder).as_posix()!r} leads "
                                      f"to {str(real)!r}, outside the dataset folder (a link); "
                                      "data files are read from inside it only. Replace the "
                                      "link with the file and rerun. Nothing was written.")
                found.add(real)
        if found:
            files[split] = sorted(map(str, found))
    return files


def _readme_patterns(folder: Path, where: str) -> dict[str, list] | None:
    """{split: [patterns]} from README.md's YAML header `configs` (its first config), if any."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(errors="replace")[:1_000_000]
    if not text.startswith("---"):
        return None
    import yaml
    try:
        meta = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError, RecursionError):
        return None
    configs = meta.get("configs") if isinstance(meta, dict) else None
    if not isinstance(configs, list) or not configs or not isinstance(configs[0], dict):
        return None
    spec = configs[0].get("data_files")
    if isinstance(spec, (str, dict)):
        spec = [spec]
    if not isinstance(spec, list):
        return None
    out: dict[str, list] = {}
    for item in spec:
        split, paths = (item.get("split", "train"), item.get("path")) \
            if isinstance(item, dict) else ("train", item)
        out.setdefault(str(split), []).extend(paths if isinstance(paths, list) else [paths])
    return out


def check_parquet_sizes(path: Path, where: str) -> None:
    """Refuse a parquet file any of whose column chunks decodes to more than
    MAX_PARQUET_CHUNK_MB: a few KB of zstd can claim gigabytes.

    The footer gives each chunk's size after decompression, but not after decoding: a run-length
    encoded column can hold millions of values in a few bytes, and a dictionary-encoded one can
    repeat one large value in every row. So the chunk's values are counted from the footer
    (8 bytes each at the most for a fixed-width column), and a dictionary-encoded byte column is
    read as its dictionary and indices (never expanded) to sum the lengths of its values."""
    import pyarrow.parquet as pq
    limit = MAX_PARQUET_CHUNK_MB * 1_000_000
    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as e:  # noqa: BLE001 - pyarrow's many error kinds on a broken footer
        raise _unreadable(where, path, e) from None
    dictionary: set[str] = set()
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            for size, what in ((col.total_uncompressed_size, "decompresses to"),
                               (8 * col.num_values, f"holds {col.num_values:,} values, up to")):
                if size > limit:
                    raise _chunk_error(where, path, g, col.path_in_schema, f"{what} {size:,} "
                                       "bytes")
            if col.has_dictionary_page and col.physical_type == "BYTE_ARRAY":
                dictionary.add(col.path_in_schema)
    if dictionary:
        _check_dictionary_sizes(path, where, sorted(dictionary), meta.num_row_groups, limit)


def _check_dictionary_sizes(path: Path, where: str, columns: list[str], groups: int,
                            limit: int) -> None:
    """Each dictionary-encoded byte column's decoded size, from its dictionary and indices."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def decoded(arr) -> int:
        if isinstance(arr, pa.DictionaryArray):
            lengths = pc.binary_length(arr.dictionary)
            return int(pc.sum(pc.take(lengths, arr.indices)).as_py() or 0)
        if isinstance(arr, pa.StructArray):
            return sum(decoded(arr.field(k)) for k in range(arr.type.num_fields))
        if isinstance(arr, (pa.ListArray, pa.LargeListArray)):
            return decoded(arr.values)
        return 0

    try:
        f = pq.ParquetFile(path, read_dictionary=columns)
        tops = sorted({c.split(".")[0] for c in columns})
        for g in range(groups):
            table = f.read_row_group(g, columns=tops)
            for top in tops:
                size = sum(decoded(chunk) for chunk in table.column(top).chunks)
                if size > limit:
                    raise _chunk_error(where, path, g, top, f"decodes to {size:,} bytes (its "
                                       "dictionary's values repeated row by row)")
            del table
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow's many error kinds on a broken file
        raise _unreadable(where, path, e) from None


def _unreadable(where: str, path: Path, e: Exception) -> SourceError:
    return SourceError(f"{where}: {path.name!r} is not a readable parquet file "
                       f"({type(e).__name__}: {str(e)[:200]}). Fetch a fresh copy and rerun. "
                       "Nothing was written.")


def _chunk_error(where: str, path: Path, group: int, column: str, what: str) -> SourceError:
    return SourceError(
        f"{where}: {path.name!r}, row group {group}, column {column!r:.80}: {what}, over the "
        f"{MAX_PARQUET_CHUNK_MB} MB one column chunk may take (read whole). Re-write the file "
        "with smaller row groups (pyarrow `row_group_size`), or remove it, and rerun. Nothing "
        "was written.")


def _hub_split(part, split: str, image_col: str, label_col: str, classes: list[str],
               intake: Intake) -> EncodedSplit:
    """One split's undecoded image bytes, a batch at a time, each kept within the limits."""
    import datasets
    part = part.cast_column(image_col, datasets.Image(decode=False))
    blobs, labels = [], []
    for batch in part.iter(batch_size=256):
        for img, y in zip(batch[image_col], batch[label_col]):
            name = f"{split} row {len(blobs)}"
            if not isinstance(y, int) or not 0 <= y < len(classes):
                raise SourceError(f"{intake.where}: {name} has label {y!r}, not one of the "
                                  f"{len(classes)} classes. Fix the dataset and rerun.")
            if not isinstance(img, dict) or not isinstance(img.get("bytes"), bytes):
                raise SourceError(f"{intake.where}: {name} holds no image bytes (only a path?). "
                                  "Use a dataset with the images embedded.")
            blobs.append(intake.keep(name, img["bytes"]))
            labels.append(y)
    names = [f"{split}/{classes[y]}/{i:05d}" for i, y in enumerate(labels)]
    return EncodedSplit(blobs, np.asarray(labels, dtype=np.int64), names)


# ------------------------------------------------------------------ checksums, raw format

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


def unpack(arrays: dict[str, np.ndarray], n_classes: int, where: str,
           error: type[StageError] = SourceError) -> EncodedSplit:
    """data/raw/<split>.npz's arrays -> an encoded split. data/raw may come from a DVC remote:
    offsets that run backwards or past the bytes, or labels outside the classes, are refused
    by name rather than turned into wrong images or labels."""
    problem = _raw_problem(arrays, n_classes)
    if problem:
        raise error(f"{where}: {problem}. The raw data is corrupt or was not written by the "
                    "download stage: rerun it (`dvc repro download`) or pull a good copy. "
                    "Nothing was written.")
    data, off = arrays["bytes"], arrays["offsets"].astype(np.int64)
    blobs = [data[off[k]:off[k + 1]].tobytes() for k in range(len(off) - 1)]
    return EncodedSplit(blobs, arrays["labels"].astype(np.int64),
                        [str(n) for n in arrays["names"]])


def _raw_problem(arrays: dict[str, np.ndarray], n_classes: int) -> str | None:
    missing = sorted({"bytes", "offsets", "labels", "names"} - set(arrays))
    if missing:
        return f"it lacks the array(s) {missing}"
    data, off, labels, names = (arrays[k] for k in ("bytes", "offsets", "labels", "names"))
    if data.dtype != np.uint8 or data.ndim != 1:
        return f"'bytes' is {data.dtype} of shape {data.shape}, not 1-D uint8"
    if off.dtype.kind not in "iu" or labels.dtype.kind not in "iu" or off.ndim != 1 \
            or labels.ndim != 1 or names.shape != labels.shape:
        return (f"'offsets' ({off.dtype}, {off.shape}), 'labels' ({labels.dtype}, "
                f"{labels.shape}) and 'names' ({names.shape}) are not 1-D integers and names "
                "of matching lengths")
    off = off.astype(np.int64)
    if len(off) != len(labels) + 1 or off[0] != 0 or off[-1] != len(data) \
            or (np.diff(off) < 0).any():
        return (f"'offsets' do not run monotonically from 0 to the {len(data):,} bytes, one "
                f"more than the {len(labels):,} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        return (f"'labels' run from {labels.min()} to {labels.max()}, outside the "
                f"{n_classes} classes")
    return None
