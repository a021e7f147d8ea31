"""Get the dataset (hub id or local copy) into data/raw, still encoded (the `download` stage).

Output folder: <split>.npz (the image files' bytes, concatenated, with offsets, labels and names)
for train and test, and source.json (where it came from, class names, counts, checksums).
"""
from __future__ import annotations

import time
from pathlib import Path

from augvit.data.archives import iter_members
from augvit.data.sources import (SPLITS, Limits, SourceError, SourceUnavailable,
                                 content_checksum, file_sha256, is_local, pack, read_hub,
                                 read_local)
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


def read_source(source: str, limits: Limits) -> tuple[dict, dict, list[str]]:
    """(record, splits, classes) of one source: a local folder or archive (or a local copy of
    a hub dataset's parquet files), or a Hugging Face dataset id."""
    record: dict = {"source": source}
    path = local_path(source) if is_local(source) else Path(source)
    if is_local(source) and path.is_dir() and not (path / "train").is_dir() \
            and next(path.rglob("*.parquet"), None) is not None:
        # A local copy of a hub dataset (parquet): its links are checked as an image folder's
        # are (iter_members refuses a link out of the folder), before `datasets` reads it.
        for _ in iter_members(path):
            pass
        splits, classes = read_hub(str(path), limits)
        record["kind"] = "huggingface-local"
    elif is_local(source):
        splits, classes = read_local(path, limits)
        record["kind"] = "local"
        if path.is_file():
            record["archive_sha256"] = file_sha256(path)
    else:
        splits, classes = read_hub(source, limits)
        record["kind"] = "huggingface"
    return record, splits, classes


def first_available(sources: list[str], limits: Limits) -> tuple[dict, dict, list[str]]:
    """The first source of the list that is there: a missing path or an unreachable hub moves
    on to the next one (and is recorded); a source that is there but broken stops here."""
    skipped = []
    for source in sources:
        try:
            record, splits, classes = read_source(source, limits)
        except SourceUnavailable as e:
            if len(sources) == 1:
                raise
            skipped.append({"source": source, "why": str(e).split(". ")[0]})
            if len(sources) > 1:
                print(f"download: {source!r} is not available; trying the next source")
            continue
        return {**record, "skipped": skipped}, splits, classes
    tried = "; ".join(f"{s['source']!r}: {s['why'].split(': ', 1)[-1]}" for s in skipped)
    raise SourceUnavailable(
        f"data.source: none of its {len(sources)} sources is available ({tried}). Put a copy "
        "where the list looks, or give yours: `dvc exp run -S data.source=PATH` (an image-folder "
        "directory or a .tar/.tar.gz/.zip archive of one). Nothing was written.")


def fetch(source: str | list[str], out_dir: Path, expected_sha256: str | None = None,
          limits: Limits = Limits()) -> dict:
    """Read data.source (one source, or a list tried in turn) within `limits` (params.yaml
    data.max_image_mb, max_total_mb, max_image_pixels: `Limits.of(params.data)`), check it,
    and only then write out_dir. source.json records the source used and those skipped."""
    t0 = time.perf_counter()
    sources = [source] if isinstance(source, str) else list(source)
    record, splits, classes = first_available(sources, limits)
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
    print(f"download: {record['counts']} images, {len(classes)} classes from "
          f"{record['source']!r} in {time.perf_counter() - t0:.1f}s; content sha256 "
          f"{record['content_sha256'][:16]}…")
    return record
