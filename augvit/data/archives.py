"""Reading a data copy within bounds: the members of a folder, .tar/.tar.gz or .zip, and the
limits (`Limits`, `Intake`) every source's images are kept within, a Hugging Face one too.

A copy is untrusted: an archive someone sent, a folder pulled from elsewhere. So:
- Listing gives each member's name, kind and claimed size without reading its bytes; the
  caller (augvit/data/sources.py) decides from the name and the claim whether to read it.
- Reading is bounded: at most limit + 1 bytes, so a header that understates a member's size, or
  a deflate bomb, costs no more memory than the limit.
- Archives are read in memory, never extracted: `../`, absolute names, links and devices inside
  them write nothing. Only regular files are members (tar/zip links are not read).
- A folder is walked without following links (os.walk, lstat). A link to a file inside the
  folder is read as that file; any other link (out of the folder, to a folder, dangling) is
  refused by name: a link can reach anything this user can read.
- A zip member that is encrypted, or compressed other than stored/deflate, is refused by name
  (zipfile inflates bzip2/lzma without an output bound, and cannot decrypt without a password).
- A zip whose members' data overlap (one deflate stream counted by many entries: the
  "better zip bomb"), or a member that claims over MAX_ZIP_RATIO times its compressed size,
  is refused from its headers before anything is inflated.
- A member name longer than MAX_NAME_CHARS, or a folder deeper than MAX_DEPTH, is refused by
  name: names are kept for every image (in one fixed-width array), and a deep folder would
  exhaust the walk's recursion.
- Each kept image counts against data.max_image_mb, data.max_total_mb (download holds them all
  in memory) and data.max_image_pixels (width x height, from its header: nothing decoded).
"""
from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from PIL import Image

from augvit.io import StageError

if TYPE_CHECKING:
    from augvit.params import DataParams

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
# The decoders those suffixes need, and no others: PIL would otherwise try every format it
# knows on any bytes (some of them hand the file to an outside program, e.g. EPS).
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
MB = 1_000_000                  # data.max_image_mb and max_total_mb are decimal megabytes
MAX_NAME_CHARS = 1024          # a member's whole name; file systems allow 255 per part
MAX_DEPTH = 64                 # folder levels below the data folder (the layout needs 4)
# Images are compressed already (PNG, JPEG): deflate gains little more. Zeros gain 1000x.
MAX_ZIP_RATIO = 100
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
# What a corrupt archive raises while it is listed or read (zipfile, tarfile, gzip, zlib).
BROKEN = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError,
          NotImplementedError, ValueError)


class SourceError(StageError):
    """The data source is missing, unreadable or not laid out as expected."""


class SourceUnavailable(SourceError):
    """The source is not there (no such path, or the hub cannot be reached): with a list of
    sources, the next one is tried. A source that is there but broken is a SourceError."""


@dataclass(frozen=True)
class Member:
    name: str                                    # '/'-separated path inside the copy
    is_dir: bool
    size: int                                    # claimed size in bytes (0 for a folder)
    open: Callable[[], BinaryIO] | None = None   # a reader of its bytes (files only)
    at: int = 0                                  # bytes of an archive read to reach it


def corrupt(where: str, e: BaseException, member: str | None = None) -> SourceError:
    at = f"member {member!r}: " if member else ""
    return SourceError(f"{where}: {at}the archive is truncated or corrupt "
                       f"({type(e).__name__}: {e}). Fetch a fresh copy and rerun. Nothing was "
                       "written.")


def read_bounded(member: Member, where: str, limit: int) -> bytes | None:
    """At most `limit` bytes of a member, or None if it holds more (only limit+1 are read)."""
    try:
        with member.open() as f:
            data = f.read(limit + 1)
    except SourceError:
        raise
    except (*BROKEN, RuntimeError) as e:      # RuntimeError: zipfile's "encrypted" on some paths
        raise corrupt(where, e, member.name) from None
    return None if len(data) > limit else data


# ------------------------------------------------------------------ limits

@dataclass(frozen=True)
class Limits:
    """params.yaml's data.max_image_mb, max_total_mb and max_image_pixels. The defaults are
    params.yaml's values (a test holds them equal) for callers that pass no params."""
    max_image_mb: float = 50
    max_total_mb: float = 4096
    max_image_pixels: int = 40_000_000

    @classmethod
    def of(cls, data: DataParams) -> Limits:
        return cls(data.max_image_mb, data.max_total_mb, data.max_image_pixels)

    @property
    def image_bytes(self) -> int:
        return int(self.max_image_mb * MB)

    @property
    def total_bytes(self) -> int:
        return int(self.max_total_mb * MB)


def image_size(blob: bytes) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header, nothing decoded; None if it is not an
    image of IMAGE_FORMATS. PIL's own bomb guard is off for this one look (it would refuse by
    its built-in limit, not data.max_image_pixels, which the caller applies)."""
    guard, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(io.BytesIO(blob), formats=IMAGE_FORMATS) as im:
            return im.size
    except Exception:  # noqa: BLE001 - any malformed header: not an image; prepare skips it
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = guard


def pixels_problem(name: str, size: tuple[int, int], limit: int) -> str:
    w, h = size
    return (f"{name!r} is {w} x {h} = {w * h:,} pixels, over data.max_image_pixels = "
            f"{limit:,} (a decompression bomb, or a picture far larger than a dataset image). "
            "Remove it, or raise data.max_image_pixels if such images belong in the dataset. "
            "Nothing was written.")


class Intake:
    """Keeps images within the limits while they are read: each file's size (its claim before
    reading, then what was read), the running total, and each image's width x height. A
    refusal names the file, the limit and the params key that sets it."""

    def __init__(self, where: str, limits: Limits):
        self.where, self.limits, self.total = where, limits, 0

    def read(self, m: Member) -> bytes:
        """A member's bytes; refused by its claimed size before any byte is read."""
        self._check(m.name, m.size, f"is {_mb(m.size)} by its header")
        blob = read_bounded(m, self.where, self.limits.image_bytes)
        if blob is None:
            self._refuse(m.name, f"holds more than its header's {m.size:,} bytes",
                         "max_image_mb")
        return self.keep(m.name, blob)

    def keep(self, name: str, blob: bytes) -> bytes:
        self._check(name, len(blob), f"is {_mb(len(blob))}")
        self.total += len(blob)
        size = image_size(blob)
        if size is not None and size[0] * size[1] > self.limits.max_image_pixels:
            raise SourceError(f"{self.where}: "
                              + pixels_problem(name, size, self.limits.max_image_pixels))
        return blob

    def _check(self, name: str, n: int, found: str) -> None:
        if n > self.limits.image_bytes:
            self._refuse(name, found, "max_image_mb")
        if self.total + n > self.limits.total_bytes:
            self._refuse(name, f"brings the image files kept to {_mb(self.total + n)}",
                         "max_total_mb")

    def _refuse(self, name: str, found: str, key: str) -> None:
        todo = ("Remove it from the copy (no dataset image is this large: the copy may be "
                f"hostile), or raise data.{key} if it belongs there." if key == "max_image_mb"
                else "Point data.source at a smaller copy, or raise data.max_total_mb if the "
                "dataset is this large (download holds all its images in memory).")
        raise SourceError(f"{self.where}: {name!r} {found}, over data.{key} = "
                          f"{getattr(self.limits, key):g} MB. {todo} Nothing was written.")


def _mb(n: int) -> str:
    return f"{n / MB:,.1f} MB" if n >= MB else f"{n / MB:.3g} MB"


# ------------------------------------------------------------------ members

def iter_members(path: Path) -> Iterator[Member]:
    """The members of a folder or archive, in a stable order; nothing is read yet."""
    where = f"data.source {str(path)!r}"
    for m in _members(path):
        if len(m.name) > MAX_NAME_CHARS:
            raise SourceError(f"{where}: a member's name is {len(m.name):,} characters long "
                              f"(it starts {m.name[:60]!r}), over the {MAX_NAME_CHARS} allowed. "
                              "Rename it, or remove it, and rerun. Nothing was written.")
        yield m


def _members(path: Path) -> Iterator[Member]:
    where = f"data.source {str(path)!r}"
    if not path.exists():
        raise SourceUnavailable(f"{where}: no such file or folder. Point data.source at an "
                          "image-folder directory or a .tar/.tar.gz/.zip archive of one, or at "
                          "a Hugging Face dataset id such as uoft-cs/cifar10.")
    if path.is_dir():
        return _dir_members(path.resolve(), where)
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _tar_members(path, where)
    if name.endswith(".zip"):
        return _zip_members(path, where)
    raise SourceError(f"{where}: not a folder nor a supported archive; "
                      f"supported: a folder, {', '.join(ARCHIVE_SUFFIXES)}")


# ------------------------------------------------------------------ folders

def _dir_members(top: Path, where: str) -> Iterator[Member]:
    def refuse_unlistable(e: OSError) -> None:
        raise SourceError(f"{where}: cannot list {e.filename!r} ({e.strerror}). "
                          "Make the whole folder readable and rerun.")

    for dirpath, dirnames, filenames in os.walk(top, onerror=refuse_unlistable):
        here = Path(dirpath)
        dirnames.sort()
        if dirnames and len(here.relative_to(top).parts) >= MAX_DEPTH:
            raise SourceError(f"{where}: {(here / dirnames[0]).relative_to(top).as_posix()[:120]!r}"
                              f"... lies more than {MAX_DEPTH} folders deep; a data copy needs "
                              "train/<class>/<image>. Remove the deep folders and rerun. "
                              "Nothing was written.")
        for d in dirnames:
            if (here / d).is_symlink():        # os.walk lists it but does not descend
                raise _link_error(top, here / d, where)
            yield Member((here / d).relative_to(top).as_posix(), True, 0)
        for f in sorted(filenames):
            yield _file_member(top, here / f, where)


def _file_member(top: Path, path: Path, where: str) -> Member:
    name, real = path.relative_to(top).as_posix(), path
    if path.is_symlink():
        real = Path(os.path.realpath(path))
        if not (real.is_relative_to(top) and real.is_file()):
            raise _link_error(top, path, where)
    try:
        size = os.stat(real).st_size
    except OSError as e:
        raise SourceError(f"{where}: cannot read {name!r} ({e.strerror}). Make it readable "
                          "and rerun.") from None
    return Member(name, False, size, partial(_open_regular, real, name, where))


def _link_error(top: Path, link: Path, where: str) -> SourceError:
    target = os.path.realpath(link)
    return SourceError(
        f"{where}: {link.relative_to(top).as_posix()!r} is a link to {target!r}; links out of "
        "the data folder, to folders, or to nothing are not followed (a link can reach any "
        "file this user can read). Replace the link with a copy of what it points to, or "
        "remove it, and rerun. Nothing was written.")


def _open_regular(real: Path, name: str, where: str) -> BinaryIO:
    """Open without following a link swapped in since the check, nor blocking on a FIFO."""
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SourceError(f"{where}: {name!r} is not a regular file (a device, pipe or socket "
                          "named like an image). Remove it and rerun. Nothing was written.")
    return open(fd, "rb")


# ------------------------------------------------------------------ archives

def _tar_members(path: Path, where: str) -> Iterator[Member]:
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
            while (m := tar.next()) is not None:
                tar.members.clear()       # keep no index: a million tiny headers cost nothing
                if m.isdir():
                    yield Member(m.name.rstrip("/"), True, 0, at=raw.tell())
                elif m.isreg():           # links, devices, FIFOs: not members
                    yield Member(m.name, False, m.size, partial(tar.extractfile, m),
                                 at=raw.tell())
    except BROKEN as e:
        raise corrupt(where, e) from None


def _zip_members(path: Path, where: str) -> Iterator[Member]:
    try:
        with zipfile.ZipFile(path) as zf:
            _check_zip_layout(zf, path, where)
            for info in zf.infolist():
                kind = stat.S_IFMT(info.external_attr >> 16)     # 0: not recorded
                if info.is_dir():
                    yield Member(info.filename.rstrip("/"), True, 0, at=info.header_offset)
                elif kind in (0, stat.S_IFREG):                # a zipped link is not a member
                    yield Member(info.filename, False, info.file_size,
                                 partial(_zip_open, zf, info, where),
                                 at=info.header_offset + info.compress_size)
    except BROKEN as e:
        raise corrupt(where, e) from None


def _check_zip_layout(zf: zipfile.ZipFile, path: Path, where: str) -> None:
    """From the headers alone, before anything is inflated: each member's data must lie apart
    from every other's."""
    end = 0
    with open(path, "rb") as f:
        for info in sorted(zf.infolist(), key=lambda i: i.header_offset):
            if info.header_offset < end:
                raise SourceError(f"{where}: member {info.filename!r:.200} starts inside the "
                                  "data of the member before it: entries that share their "
                                  "compressed data (a zip bomb) are refused. Re-pack the "
                                  "archive (`zip -r` or `tar czf`) and rerun. Nothing was "
                                  "written.")
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4).ljust(4, b"\0"))
            end = info.header_offset + 30 + name_len + extra_len + info.compress_size


def _zip_open(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> BinaryIO:
    """Refuse what zipfile cannot read safely, by name, before it inflates anything: a member
    claiming over MAX_ZIP_RATIO times its compressed size, encryption, other methods."""
    how = ("encrypted" if info.flag_bits & 0x1 else
           None if info.compress_type in ZIP_METHODS else
           f"compressed with method {info.compress_type}")
    if info.file_size > max(MB, MAX_ZIP_RATIO * info.compress_size):
        raise SourceError(f"{where}: member {info.filename!r:.200} claims {info.file_size:,} "
                          f"bytes from {info.compress_size:,} compressed, over {MAX_ZIP_RATIO}x "
                          "(images are compressed already: such a member is a zip bomb). "
                          "Remove it and rerun. Nothing was written.")
    if how:
        raise SourceError(f"{where}: member {info.filename!r} is {how}; only unencrypted "
                          f"members, {' or '.join(ZIP_METHODS.values())}, are read. Re-pack "
                          "the archive unencrypted with deflate or stored (e.g. `zip -r` or "
                          "`tar czf`) and rerun. Nothing was written.")
    return zf.open(info)
