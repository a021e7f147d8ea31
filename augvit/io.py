"""Small I/O helpers every stage shares: atomic outputs, JSON, array files, user errors.

A stage writes each output under a temporary name beside it and renames it into place only once
complete, so a stage killed at any moment leaves its previous complete output or none, never a
half-written one that DVC could later take for good.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from augvit.text import printable

TMP_MARK = ".tmp-"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clean_stale_tmp(path: Path) -> None:
    """Remove leftovers of an earlier, killed attempt to write `path`."""
    for old in path.parent.glob(f"{path.name}{TMP_MARK}*"):
        _remove(old)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it vanishes.

    Works for a file or a folder. The rename is atomic on one filesystem.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        # Tests only: hold the finished output just before its rename (the outermost one), so
        # a test can kill the stage at the worst moment.
        if os.environ.get(PAUSE_ENV) and TMP_MARK not in str(path.parent):
            (path.parent / f"{path.name}.paused").touch()
            time.sleep(float(os.environ[PAUSE_ENV]))
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f"{path.name}{TMP_MARK}old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def save_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def load_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Plain .npz (no pickle), written atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class StageError(RuntimeError):
    """A failure with a message meant for the user (what, which value, what to do)."""


@contextlib.contextmanager
def user_errors(stage: str) -> Iterator[None]:
    """Print known failures as one clear message (no traceback) and exit non-zero."""
    try:
        yield
    except (StageError, FileNotFoundError) as e:
        # printable: a message may quote text from outside (a file name, a header, a value);
        # its own line breaks stay
        text = "\n".join(printable(line) for line in str(e).split("\n"))
        print(f"\nerror in stage {stage}: {text}", file=sys.stderr)
        raise SystemExit(2) from None


PAUSE_ENV = "AUGSTUDY_PAUSE_BEFORE_RENAME"   # tests only: hold a finished tmp output this long


def raise_on_sigterm() -> None:
    """Turn SIGTERM into an exception so `atomic_path` cleans up as it does on Ctrl-C."""
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)
