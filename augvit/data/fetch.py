"""Get the dataset (hub id or local copy) into data/raw, still encoded (the `download` stage).

Output folder: <split>.npz (the image files' bytes, concatenated, with offsets, labels and names)
for train and test, and source.json (where it came from, class names, counts, checksums).
"""
from __future__ import annotations

import time
from pathlib import Path

from augvit.data.sources import (SPLITS, SourceError, content_checksum, file_sha256, is_local,
                                 pack, read_hub, read_local)
from augvit.io import atomic_path, save_arrays, save_json


def check_sha256(record: dict, expected: str | None) -> None:
    """data.sha256 pins the archive file (for an archive) or the content (folder, hub)."""
    if expected is None:
        return
    kind = "archive_sha256" if "archive_sha256" in record else "content_sha256"
    if record[kind] != expected:
        raise SourceError(
            f"data.source {record['source']!r}: {kind.replace('_', ' ')} is {record[kind]}, "
            f"but data.sha256 expects {expected}. The copy is corrupt or a different dataset: "
            "fetch a fresh copy, or set data.sha256 to null (or the new value) if it is the "
            "copy you mean to use. Nothing was written.")


def local_path(source: str, cwd: Path | None = None) -> Path:
    """A local data.source as a path. A relative one is relative to the project; an experiment
    that `dvc exp run --queue` (or `--temp`) runs in a copy of the project under
    <project>/.dvc/tmp/exps/<name>/ still means the project's: found there if not here."""
    cwd = Path.cwd() if cwd is None else cwd
    path = Path(source).expanduser()
    if path.is_absolute() or (cwd / path).exists():
        return cwd / path
    parts = cwd.resolve().parts
    for k in range(len(parts) - 3):
        if parts[k:k + 3] == (".dvc", "tmp", "exps"):
            project = Path(*parts[:k])
            if (project / path).exists():
                return project / path
    return cwd / path


def fetch(source: str, out_dir: Path, expected_sha256: str | None = None) -> dict:
    t0 = time.perf_counter()
    record: dict = {"source": source}
    path = local_path(source) if is_local(source) else Path(source)
    if is_local(source) and path.is_dir() and not (path / "train").is_dir() \
            and next(path.rglob("*.parquet"), None) is not None:
        splits, classes = read_hub(str(path))        # a local copy of a hub dataset (parquet)
        record["kind"] = "huggingface-local"
    elif is_local(source):
        splits, classes = read_local(path)
        record["kind"] = "local"
        if path.is_file():
            record["archive_sha256"] = file_sha256(path)
    else:
        splits, classes = read_hub(source)
        record["kind"] = "huggingface"
    record.update(
        classes=classes,
        counts={s: len(splits[s].blobs) for s in SPLITS},
        content_sha256=content_checksum(splits, classes),
    )
    check_sha256(record, expected_sha256)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for s in SPLITS:
            save_arrays(tmp / f"{s}.npz", **pack(splits[s]))
        save_json(tmp / "source.json", record)
    print(f"download: {record['counts']} images, {len(classes)} classes from {source!r} "
          f"in {time.perf_counter() - t0:.1f}s; content sha256 {record['content_sha256'][:16]}…")
    return record
