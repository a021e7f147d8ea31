"""Hostile data sources: every input is built here (big ones as streams, never a big file on
disk), and each must be refused by name with nothing written, or read within its bounds."""
from __future__ import annotations

import io
import itertools
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augvit.data import decode
from augvit.data.decode import PrepareError
from augvit.data.fetch import fetch
from augvit.data.classnames import check_class_names
from augvit.data.sources import Limits, SourceError, read_hub
from augvit.io import StageError, load_arrays, load_json
from conftest import ROOT, data_params, make_image_folder, pack, record_peak

GiB = 1 << 30

# Every file this process opens while OPENED is a list (the "open" audit event covers open(),
# os.open and Path.read_bytes): how a test sees what a reader touched.
OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, Path)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def opened():
    global OPENED
    OPENED = []
    yield OPENED
    OPENED = None


class Zeros(io.RawIOBase):
    """`size` zero bytes as a stream: a huge member costs no memory and no disk to build."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def small_folder(tmp_path: Path, **kw) -> Path:
    return make_image_folder(tmp_path / "imgs", n_train=kw.pop("n_train", 4),
                             n_test=kw.pop("n_test", 2), **kw)


def tar_gz_with_zeros(folder: Path, out: Path, name: str, size: int) -> Path:
    """folder's images, then a member `name` of `size` zero bytes (~size/1000 on disk)."""
    return tar_with(folder, out, [(_info(name, size), Zeros(size))])


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def tar_with(folder: Path, out: Path, members: list[tuple[tarfile.TarInfo, bytes | Zeros]]
             ) -> Path:
    """A tar (gzipped when `out` ends in .gz) of `folder`'s contents plus `members` (header,
    data), members no folder on disk could hold: odd names, streamed zeros, links, devices."""
    with tarfile.open(out, "w:gz" if out.name.endswith(".gz") else "w") as tf:
        for child in sorted(folder.iterdir()):
            tf.add(child, arcname=child.name)
        for info, data in members:
            tf.addfile(info, (io.BytesIO(data) if isinstance(data, bytes) else data)
                       if info.size else None)
    return out


def _special(kind: bytes, name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = _info(name, 0)
    info.type, info.linkname = kind, "/etc/passwd"
    return info, b""


def zip_with_zeros(folder: Path, out: Path, name: str, size: int) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
        with zf.open(name, "w", force_zip64=True) as f:
            for _ in range(size >> 20):
                f.write(bytes(1 << 20))
    return out


def patch_zip(path: Path, member: str, **fields: int) -> None:
    """Rewrite fields of one member's local and central headers: flags, method, size."""
    data = bytearray(path.read_bytes())
    local = {"flags": (6, "<H"), "method": (8, "<H"), "size": (22, "<I")}
    central = {"flags": (8, "<H"), "method": (10, "<H"), "size": (24, "<I")}
    with zipfile.ZipFile(path) as zf:
        at = zf.getinfo(member).header_offset
    starts = [at] + [i for i in _find_all(data, b"PK\x01\x02")
                     if data[i + 46:i + 46 + len(member)] == member.encode()]
    for start, layout in zip(starts, (local, central)):
        for key, value in fields.items():
            off, fmt = layout[key]
            struct.pack_into(fmt, data, start + off, value)
    path.write_bytes(bytes(data))


def _find_all(data: bytes, needle: bytes):
    i = data.find(needle)
    while i != -1:
        yield i
        i = data.find(needle, i + 1)


def png(width: int, height: int, bit_depth: int, color_type: int, rows) -> bytes:
    """A PNG written chunk by chunk, its rows streamed through zlib (a bomb stays small)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(b"\x00" + r) for r in rows) + z.flush()
    head = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """50000 x 50000 one-bit black: 2.5 gigapixels (7.5 GB as RGB) in about 300 KB."""
    return png(50000, 50000, 1, 0, itertools.repeat(bytes(6250), 50000))


# ------------------------------------------------------------------ 1. read images only

EXTRAS = ["README.md", "train/labels.csv", "train/cat/notes.txt", "train/cat/sub/deep.png",
          "test/dog/.hidden.png", "other/stuff/cat/x.png"]


@pytest.mark.parametrize("kind", ["dir", ".tar.gz", ".zip"])
def test_only_images_in_class_folders_are_read_at_all(tmp_path, monkeypatch, opened, kind):
    folder = small_folder(tmp_path)
    for extra in EXTRAS:
        (folder / extra).parent.mkdir(parents=True, exist_ok=True)
        (folder / extra).write_bytes(b"not an image, and not to be read")
    src = folder if kind == "dir" else pack(folder, tmp_path / f"d{kind}")
    members: list[str] = []
    extract, zopen = tarfile.TarFile.extractfile, zipfile.ZipFile.open
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda self, m, *a: (
        members.append(getattr(m, "name", m)), extract(self, m, *a))[1])
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, m, mode="r", *a, **k: (
        mode == "r" and members.append(getattr(m, "filename", m)),
        zopen(self, m, mode, *a, **k))[1])
    opened.clear()
    record = fetch(str(src), tmp_path / "raw")
    assert record["counts"] == {"train": 12, "test": 6}
    read = members if kind != "dir" else [
        Path(p).relative_to(folder.resolve()).as_posix() for p in opened
        if Path(p).is_relative_to(folder.resolve())]
    assert len(read) == 18 and not set(read) & set(EXTRAS), read


# ------------------------------------------------------------------ 2. size limits

def peak_of_fetch(src: Path, out: Path) -> tuple[str, float]:
    """fetch in a fresh process: (what it printed, its peak resident memory in MB)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent (pytest) across exec.
    code = ("import re, sys\n"
            "from augvit.data.fetch import fetch\nfrom augvit.io import StageError\n"
            "try:\n    fetch(sys.argv[1], sys.argv[2]); print('written')\n"
            "except StageError as e:\n    print('refused:', e)\n"
            "status = open('/proc/self/status').read()\n"
            "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', status)[1]) / 1024)\n")
    run = subprocess.run([sys.executable, "-c", code, str(src), str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    text, peak = run.stdout.rsplit("\n", 2)[-3:-1]
    return text, float(peak)


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_a_1_gib_member_of_zeros_is_refused_by_its_header_with_low_memory(tmp_path, suffix):
    folder = small_folder(tmp_path)
    build = tar_gz_with_zeros if suffix == ".tar.gz" else zip_with_zeros
    src = build(folder, tmp_path / f"bomb{suffix}", "train/cat/huge.png", GiB)
    assert src.stat().st_size < 6 * (1 << 20)
    text, peak_mb = peak_of_fetch(src, tmp_path / "raw")
    assert text.startswith("refused:") and "'train/cat/huge.png' is 1,073.7 MB by its header" \
        in text and "data.max_image_mb = 50 MB" in text, text
    assert peak_mb < 300, peak_mb                   # reading it would take over 1024 MB
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_a_200_mb_png_member_puts_nothing_in_the_output(tmp_path, suffix, opened):
    folder = small_folder(tmp_path)
    build = tar_gz_with_zeros if suffix == ".tar.gz" else zip_with_zeros
    src = build(folder, tmp_path / f"big{suffix}", "train/dog/big.png", 200 << 20)
    with pytest.raises(SourceError, match=r"'train/dog/big.png' is 209.7 MB by its header, "
                                          r"over data.max_image_mb = 50 MB.*raise "
                                          r"data.max_image_mb.*Nothing was written"):
        fetch(str(src), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
    assert not [p for p in opened if "raw" in Path(p).name]


def test_a_folder_file_over_the_limit_is_refused_by_its_size_unread(tmp_path, opened):
    folder = small_folder(tmp_path)
    big = folder / "train" / "frog" / "big.png"
    with open(big, "wb") as f:                           # sparse: no disk used
        f.truncate(3_000_000)
    opened.clear()
    with pytest.raises(SourceError, match=r"'train/frog/big.png' is 3.0 MB by its header, "
                                          r"over data.max_image_mb = 2 MB"):
        fetch(str(folder), tmp_path / "raw", limits=Limits(max_image_mb=2))
    assert str(big.resolve()) not in opened and not (tmp_path / "raw").exists()


def test_a_zip_whose_header_understates_a_member_is_refused_by_name(tmp_path):
    folder = small_folder(tmp_path)
    src = zip_with_zeros(folder, tmp_path / "lie.zip", "train/cat/lie.png", 3 << 20)
    patch_zip(src, "train/cat/lie.png", size=100)        # claims 100 bytes, holds 3 MiB
    with pytest.raises(SourceError, match=r"member 'train/cat/lie.png': .*corrupt"):
        fetch(str(src), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_a_read_stops_one_byte_past_the_limit_whatever_the_header_says():
    from augvit.data.archives import Intake, Member
    asked = []

    class Stream(io.BytesIO):
        def read(self, n=-1):
            asked.append(n)
            return super().read(n)

    lying = Member("train/cat/x.png", False, 10, lambda: Stream(bytes(10_000_000)))
    with pytest.raises(SourceError, match=r"'train/cat/x.png' holds more than its header's 10 "
                                          r"bytes, over data.max_image_mb = 0.001 MB"):
        Intake("data.source 'x'", Limits(max_image_mb=0.001)).read(lying)
    assert asked == [1001]


def test_the_total_is_checked_as_images_are_read(tmp_path, opened):
    folder = small_folder(tmp_path, n_train=10)
    opened.clear()
    with pytest.raises(SourceError, match=r"brings the image files kept to .* over "
                                          r"data.max_total_mb = 0.01 MB"):
        fetch(str(folder), tmp_path / "raw", limits=Limits(max_total_mb=0.01))
    images = [p for p in opened if p.endswith((".png", ".jpg"))]
    assert 0 < len(images) < 10                 # stopped at the image that crossed the limit
    assert not (tmp_path / "raw").exists()


def test_limits_default_to_params_yaml():
    assert Limits() == Limits.of(data_params())


# ------------------------------------------------------------------ 3. zip members

@pytest.mark.parametrize("how,fields,message", [
    ("encrypted", {"flags": 0x1}, "is encrypted"),
    ("method 99", {"method": 99}, "is compressed with method 99"),
    ("bzip2", None, "is compressed with method 12"),
])
def test_zip_members_it_cannot_read_safely_are_refused_by_name(tmp_path, how, fields, message):
    folder = small_folder(tmp_path)
    src = pack(folder, tmp_path / "d.zip")
    name = "train/dog/0000.png"
    if fields:
        patch_zip(src, name, **fields)
    else:                                       # bzip2 inflates without an output bound
        with zipfile.ZipFile(src, "a") as zf:
            zf.writestr("train/dog/bz.png", (folder / name).read_bytes(), zipfile.ZIP_BZIP2)
        name = "train/dog/bz.png"
    with pytest.raises(SourceError, match=rf"member '{name}' {message}; only unencrypted "
                                          r"members, stored or deflate.*Re-pack"):
        fetch(str(src), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_a_zip_member_that_fails_to_inflate_is_named(tmp_path):
    folder = small_folder(tmp_path)
    src = pack(folder, tmp_path / "d.zip")
    with zipfile.ZipFile(src, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train/frog/z.png", os.urandom(1 << 20))
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo("train/frog/z.png")
    data = bytearray(src.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + 20
    data[start:start + 64] = os.urandom(64)
    src.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"member 'train/frog/z.png': the archive is "
                                          r"truncated or corrupt"):
        fetch(str(src), tmp_path / "raw")


def test_archives_are_never_extracted(tmp_path):
    """What already held: odd names, links and devices inside a tar write and read nothing."""
    folder = small_folder(tmp_path)
    src = tar_with(folder, tmp_path / "odd.tar",
                   [(_info(name, 3), b"abc") for name in ("../../escape.png", "/tmp/absolute.png")]
                   + [_special(tarfile.SYMTYPE, "train/cat/sym.png"),
                      _special(tarfile.LNKTYPE, "train/cat/hard.png"),
                      _special(tarfile.CHRTYPE, "train/cat/dev.png")])
    record = fetch(str(src), tmp_path / "raw")
    assert record["counts"] == {"train": 12, "test": 6}
    assert not (tmp_path.parent / "escape.png").exists()
    assert not Path("/tmp/absolute.png").exists()
    raw = load_arrays(tmp_path / "raw" / "train.npz")
    assert b"root:" not in raw["bytes"].tobytes()


# ------------------------------------------------------------------ 4. folder links

@pytest.mark.parametrize("link,target", [("train/cat/x.png", "/etc/passwd"),
                                         ("train/evil", "/etc"),
                                         ("test/dog/gone.png", "/nonexistent/x.png")])
def test_a_link_out_of_the_data_folder_is_refused_and_never_read(tmp_path, opened, link,
                                                                 target):
    folder = small_folder(tmp_path)
    (folder / link).symlink_to(target)
    with pytest.raises(SourceError, match=rf"'{link}' is a link to '{target}'; links out of "
                                          r"the data folder.*are not followed"):
        fetch(str(folder), tmp_path / "raw")
    assert not [p for p in opened if p.startswith(("/etc", "/nonexistent"))]
    assert not (tmp_path / "raw").exists()


def test_a_link_to_a_file_inside_the_folder_is_read_as_that_file(tmp_path):
    folder = small_folder(tmp_path)
    (folder / "train" / "cat" / "again.png").symlink_to("../dog/0000.png")
    record = fetch(str(folder), tmp_path / "raw")
    assert record["counts"] == {"train": 13, "test": 6}


def parquet_split(path: Path, n: int, seed: int) -> None:
    """A hub-style split (Image + ClassLabel, images embedded) written by `datasets` itself."""
    import datasets
    features = datasets.Features({"img": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["cat", "dog"])})
    rng = np.random.default_rng(seed)
    imgs = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(n)]
    datasets.Dataset.from_dict({"img": imgs, "label": [k % 2 for k in range(n)]},
                               features=features).to_parquet(str(path))


def test_a_parquet_folders_link_out_of_it_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A local copy of a hub dataset is a folder too: its train split linked to a parquet file
    elsewhere would put that file's images into data/raw (and the DVC cache)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "hub").mkdir()
    parquet_split(tmp_path / "elsewhere.parquet", 4, 1)
    parquet_split(tmp_path / "hub" / "test.parquet", 2, 2)
    (tmp_path / "hub" / "train.parquet").symlink_to(tmp_path / "elsewhere.parquet")
    with pytest.raises(SourceError, match=r"'train.parquet' is a link to .*elsewhere.parquet'; "
                                          r"links out of the data folder"):
        fetch(str(tmp_path / "hub"), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()
    # the same folder with the file itself in it is read
    (tmp_path / "hub" / "train.parquet").unlink()
    parquet_split(tmp_path / "hub" / "train.parquet", 4, 1)
    assert fetch(str(tmp_path / "hub"), tmp_path / "raw")["counts"] == {"train": 4, "test": 2}


def test_a_pipe_named_like_an_image_is_refused_not_waited_on(tmp_path):
    folder = small_folder(tmp_path)
    os.mkfifo(folder / "train" / "cat" / "pipe.png")
    with pytest.raises(SourceError, match=r"'train/cat/pipe.png' is not a regular file"):
        fetch(str(folder), tmp_path / "raw")


# ------------------------------------------------------------------ 5. class names

@pytest.mark.parametrize("name", ["<img src=x onerror=alert(1)>", "CON", "nul.txt", " cat",
                                  "cat.", "a\x1bb", 'x"y', "x'y", "a*b", "a|b", "a:b", "a\\b",
                                  "&amp;", "x" * 101])
def test_a_class_folder_name_that_could_inject_is_refused(tmp_path, name):
    folder = small_folder(tmp_path, classes=["cat", name])
    with pytest.raises(SourceError, match=r"class name .* is not allowed; class names may "
                                          r"hold letters, digits, spaces and _ - \. , \( \) \+"):
        fetch(str(folder), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_plain_class_names_in_any_script_are_accepted():
    check_class_names(["airplane", "sea_lion", "New York (NY)", "Größe", "猫", "t-shirt",
                       "a.b", "1,2", "c++", "x" * 100], "here")


def test_a_script_tag_in_an_archive_path_is_refused(tmp_path):
    folder = small_folder(tmp_path)
    src = tar_with(folder, tmp_path / "d.tar",
                   [(_info("train/</script><script>alert(1)</script>/x.png", 3), b"abc")])
    with pytest.raises(SourceError, match=r"class name '<' is not allowed"):
        fetch(str(src), tmp_path / "raw")


def test_hub_class_label_names_that_could_inject_are_refused(tmp_path, monkeypatch):
    import datasets
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    evil = "</script><script>alert(1)</script>"
    features = datasets.Features({"img": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["cat", evil])})
    img = Image.new("RGB", (8, 8))
    for split in ("train", "test"):
        datasets.Dataset.from_dict({"img": [img, img], "label": [0, 1]}, features=features) \
            .to_parquet(str(tmp_path / "hub" / f"{split}.parquet"))
    with pytest.raises(SourceError, match=r"class name '</script><script>alert\(1\)</script>' "
                                          r"is not allowed"):
        read_hub(str(tmp_path / "hub"))
    with pytest.raises(SourceError, match="is not allowed"):
        fetch(str(tmp_path / "hub"), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_prepare_and_later_stages_check_class_names_again(tmp_path):
    """data/raw and data/prepared may come from a DVC remote: their class names are rechecked."""
    from augvit.data.batches import load_classes
    fetch(str(small_folder(tmp_path)), tmp_path / "raw")
    decode.prepare(data_params(val_fraction=0.25), tmp_path / "raw", tmp_path / "prep")
    source = load_json(tmp_path / "raw" / "source.json")
    source["classes"][0] = "<b onmouseover=alert(1)>cat</b>"
    (tmp_path / "raw" / "source.json").write_text(json.dumps(source))
    with pytest.raises(PrepareError, match=r"source.json: class name '<b onmouseover"):
        decode.prepare(data_params(val_fraction=0.25), tmp_path / "raw", tmp_path / "prep2")
    assert not (tmp_path / "prep2").exists()
    meta = load_json(tmp_path / "prep" / "meta.json")
    meta["classes"][1] = "../../etc"
    (tmp_path / "prep" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StageError, match=r"meta.json: class name '\.\./\.\./etc'"):
        load_classes(tmp_path / "prep")


# ------------------------------------------------------------------ 6. images

def test_a_decompression_bomb_never_reaches_data_raw(tmp_path, bomb_png):
    folder = small_folder(tmp_path)
    (folder / "train" / "cat" / "bomb.png").write_bytes(bomb_png)
    with pytest.raises(SourceError, match=r"'train/cat/bomb.png' is 50000 x 50000 = "
                                          r"2,500,000,000 pixels, over data.max_image_pixels = "
                                          r"40,000,000.*raise data.max_image_pixels"):
        fetch(str(folder), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_prepare_refuses_a_bomb_in_data_raw_by_name(tmp_path, bomb_png):
    folder = small_folder(tmp_path)
    (folder / "train" / "cat" / "bomb.png").write_bytes(bomb_png)
    fetch(str(folder), tmp_path / "raw", limits=Limits(max_image_pixels=10**10))
    with pytest.raises(PrepareError, match=r"prepare: 'train/cat/bomb.png' is 50000 x 50000 = "
                                           r"2,500,000,000 pixels, over data.max_image_pixels"):
        decode.prepare(data_params(val_fraction=0.25), tmp_path / "raw", tmp_path / "prep")
    assert not (tmp_path / "prep").exists()


def test_an_image_over_the_pixel_limit_fails_prepare_even_from_a_worker(tmp_path,
                                                                        monkeypatch):
    fetch(str(small_folder(tmp_path)), tmp_path / "raw")
    monkeypatch.setattr(decode, "CHUNK", 4)          # several chunks: a process pool decodes
    with pytest.raises(PrepareError, match=r"'train/cat/0003.jpg' is 40 x 40 = 1,600 pixels, "
                                           r"over data.max_image_pixels = 1,500"):
        decode.prepare(data_params(val_fraction=0.25, max_image_pixels=1500), tmp_path / "raw",
                       tmp_path / "prep")
    assert not (tmp_path / "prep").exists()


RAMP16 = (np.arange(256) * 257).astype(">u2")       # 0..65535 in 256 steps


@pytest.mark.parametrize("kind", ["png grey", "png grey+alpha", "png rgb", "ppm grey",
                                  "tiff grey"])
def test_16_bit_images_are_scaled_to_8_bits_not_clipped(kind):
    if kind == "png grey":
        blob = png(256, 2, 16, 0, [RAMP16.tobytes()] * 2)
    elif kind == "png grey+alpha":
        blob = png(256, 2, 16, 4, [np.stack([RAMP16, RAMP16], 1).tobytes()] * 2)
    elif kind == "png rgb":
        blob = png(256, 2, 16, 2, [np.stack([RAMP16] * 3, 1).tobytes()] * 2)
    elif kind == "ppm grey":
        blob = b"P5\n256 2\n65535\n" + RAMP16.tobytes() * 2
    else:
        buf = io.BytesIO()
        Image.frombytes("I;16B", (256, 2), RAMP16.tobytes() * 2).save(buf, "TIFF")
        blob = buf.getvalue()
    out = decode.decode_one(blob, 256)
    assert out.shape == (3, 256, 256)
    assert np.array_equal(out[0, 0, :], np.arange(256)), out[0, 0, ::32]


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_and_float_images_are_refused_by_name(mode):
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.int32 if mode == "I" else np.float32)
                    .reshape(8, 8), mode).save(buf, "TIFF")
    with pytest.raises(PrepareError, match=rf"'train/cat/x.tif' is a TIFF image of mode {mode}"
                                           r" .*Convert it to an 8- or 16-bit PNG"):
        decode.decode_one(buf.getvalue(), 8, "train/cat/x.tif")


# ------------------------------------------------------------------ 7. empty validation split

def test_a_val_fraction_that_leaves_val_empty_is_refused(tmp_path):
    fetch(str(make_image_folder(tmp_path / "imgs")), tmp_path / "raw")   # 12 per class
    with pytest.raises(PrepareError, match=r"data.val_fraction = 0.01 gives 0 validation "
                                           r"images .*n = 12 .*at least 0.042"):
        decode.prepare(data_params(val_fraction=0.01), tmp_path / "raw", tmp_path / "prep")
    assert not (tmp_path / "prep").exists()
    meta = decode.prepare(data_params(val_fraction=0.042), tmp_path / "raw", tmp_path / "prep")
    assert meta["counts"]["val"] == 3


# ------------------------------------------------------------------ 8. data/raw from a remote

def _tamper(arrays: dict, how: str) -> dict:
    off, labels = arrays["offsets"].copy(), arrays["labels"].copy()
    if how == "backwards":
        off[2], off[3] = off[3], off[2]
    elif how == "past the bytes":
        off[-1] += 1000
    elif how == "label too big":
        labels[0] = 3
    elif how == "negative label":
        labels[0] = -1
    elif how == "missing names":
        return {k: v for k, v in arrays.items() if k != "names"}
    elif how == "extra array":
        return {**arrays, "evil": np.zeros(3)}
    elif how == "pickled":
        return {**arrays, "names": np.asarray([{"x": 1}] * len(labels), dtype=object)}
    return {**arrays, "offsets": off, "labels": labels}


@pytest.mark.parametrize("how,message", [
    ("backwards", "'offsets' do not run monotonically"),
    ("past the bytes", "'offsets' do not run monotonically"),
    ("label too big", "'labels' run from 0 to 3, outside the 3 classes"),
    ("negative label", "'labels' run from -1 to 2"),
    ("missing names", r"lacks the array\(s\) \['names'\]"),
    ("extra array", r"holds 'evil.npy', not one of \['bytes.npy'"),
    ("pickled", "cannot be read .*Object arrays cannot be loaded"),
])
def test_tampered_raw_arrays_are_refused_by_name(tmp_path, how, message):
    fetch(str(small_folder(tmp_path)), tmp_path / "raw")
    path = tmp_path / "raw" / "train.npz"
    arrays = _tamper(load_arrays(path), how)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(PrepareError, match=rf"train.npz.*{message}"):
        decode.prepare(data_params(val_fraction=0.25), tmp_path / "raw", tmp_path / "prep")
    assert not (tmp_path / "prep").exists()


def test_a_raw_array_claiming_more_than_the_total_limit_is_not_loaded(tmp_path):
    fetch(str(small_folder(tmp_path)), tmp_path / "raw")
    path = tmp_path / "raw" / "train.npz"
    arrays = load_arrays(path)
    with open(path, "wb") as f:                       # 50 MB of zeros, 50 KB on disk
        np.savez_compressed(f, **{**arrays, "bytes": np.zeros(50_000_000, np.uint8)})
    with pytest.raises(PrepareError, match=r"array 'bytes.npy' claims 50,000,128 bytes, more "
                                           r"than data.max_total_mb = 10 MB allows"):
        decode.prepare(data_params(val_fraction=0.25, max_total_mb=10), tmp_path / "raw",
                       tmp_path / "prep")


@pytest.mark.parametrize("kind", ["tar.gz", "zip", "folder"])
def test_reading_a_local_source_reports_its_progress_in_plain_lines(tmp_path, monkeypatch,
                                                                    capsys, kind):
    """Not on a terminal (CI, a cluster log): a plain line per interval, bytes read of the
    archive's size rising to 100% with the time left; a folder's total is not known."""
    from augvit.data import sources
    monkeypatch.setattr(sources, "PROGRESS_EVERY_S", 0.0)
    folder = small_folder(tmp_path, n_train=6, n_test=3)
    src = folder if kind == "folder" else pack(folder, tmp_path / f"c.{kind}")
    sources.read_local(src)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("download: ")]
    assert len(lines) == 3 * (6 + 3)                     # one per image read
    counts = [int(re.match(r"download: (\d+) images", x).group(1)) for x in lines]
    assert counts == list(range(1, len(lines) + 1))
    if kind == "folder":
        assert re.fullmatch(r"download: 27 images, 0\.\d MB read in \d+ s", lines[-1])
    else:
        shares = [int(re.search(r"\((\d+)%\)", x).group(1)) for x in lines]
        assert shares == sorted(shares) and 0 < shares[-1] <= 100
        assert all(re.search(r"MB of 0\.\d MB read \(\d+%\), about \d+ s left$", x)
                   for x in lines)


def _tamper_prepared(arrays: dict, how: str) -> dict:
    images, labels = arrays["images"], arrays["labels"]
    return {"float images": {"images": images.astype(np.float64), "labels": labels},
            "int32 labels": {"images": images, "labels": labels.astype(np.int32)},
            "label too big": {"images": images, "labels": labels + 3},
            "other size": {"images": images[:, :, :-1, :-1], "labels": labels},
            "fewer labels": {"images": images, "labels": labels[:-1]},
            "extra array": {**arrays, "evil": np.zeros(3)}}[how]


@pytest.mark.parametrize("how,message", [
    ("float images", r"'images' is float64 \(\d+, 3, 8, 8\); prepare writes uint8"),
    ("int32 labels", r"'labels' is int32 .*prepare writes int64"),
    ("label too big", r"'labels' run from 3 to 5, outside the 3 classes"),
    ("other size", r"'images' is uint8 \(\d+, 3, 7, 7\).*image_size 8"),
    ("fewer labels", r"'labels' is int64 \(\d+,\); prepare writes int64 \(\d+,\), one per"),
    ("extra array", r"holds \['evil.npy', 'images.npy', 'labels.npy'\]"),
    ("compressed", r"'images.npy' is compressed"),
])
def test_a_tampered_prepared_split_is_refused_by_name_not_cast(tmp_path, how, message):
    """data/prepared may come from a DVC remote: every stage that reads it (train, evaluate,
    plots) gets prepare's dtypes and shapes or a named error, never a silent cast."""
    from augvit.data.batches import PreparedDataError, load_split
    fetch(str(small_folder(tmp_path)), tmp_path / "raw")
    prep = tmp_path / "prep"
    decode.prepare(data_params(val_fraction=0.25, image_size=8), tmp_path / "raw", prep)
    images, labels = load_split(prep, "train")               # the real output loads
    assert images.dtype.is_floating_point is False and len(images) == len(labels)
    arrays = load_arrays(prep / "train.npz")
    with open(prep / "train.npz", "wb") as f:
        if how == "compressed":
            np.savez_compressed(f, **arrays)
        else:
            np.savez(f, **_tamper_prepared(arrays, how))
    with pytest.raises(PreparedDataError, match=rf"train.npz: {message}.*dvc repro --force "
                                                 r"prepare"):
        load_split(prep, "train")


# ------------------------------------------------------------------ bombs, round two
PEAK_MB = 700          # what any hostile source may cost download, at most


def overlapping_zip(out: Path, name: str, size: int, entries: int) -> Path:
    """One deflate stream of `size` zeros that `entries` central-directory entries all point
    at (the "better zip bomb"): each entry is under the image limit, together they are not."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = b"".join(z.compress(bytes(1 << 20)) for _ in range(size >> 20)) + z.flush()
    crc = zlib.crc32(bytes(size))
    fname = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), size,
                        len(fname), 0) + fname
    central = b"".join(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc,
                                   len(data), size, len(fname), 0, 0, 0, 0, 0, 0) + fname
                       for _ in range(entries))
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, entries, entries, len(central),
                       len(local) + len(data), 0)
    out.write_bytes(local + data + central + eocd)
    return out


def test_zip_entries_that_share_their_data_are_refused_before_inflating(tmp_path):
    """20 entries of one 40 MB stream of zeros, 40 KB on disk: 800 MB kept before."""
    src = overlapping_zip(tmp_path / "overlap.zip", "train/cat/x.png", 40 << 20, 20)
    assert src.stat().st_size < 100_000
    with zipfile.ZipFile(src) as zf:                 # the premise: zipfile reads it as 20
        assert len(zf.infolist()) == 20 and zf.read(zf.infolist()[5]) == bytes(40 << 20)
    text, peak_mb = peak_of_fetch(src, tmp_path / "raw")
    assert text.startswith("refused:") and "member 'train/cat/x.png' starts inside the data " \
        "of the member before it" in text, text
    assert peak_mb < PEAK_MB, peak_mb
    record_peak("zip_shared_stream", peak_mb, src.stat().st_size)
    assert not (tmp_path / "raw").exists()


def test_a_zip_member_claiming_over_100x_its_compressed_size_is_refused_uninflated(tmp_path):
    folder = small_folder(tmp_path)
    src = zip_with_zeros(folder, tmp_path / "ratio.zip", "train/cat/z.png", 40 << 20)
    text, peak_mb = peak_of_fetch(src, tmp_path / "raw")
    assert text.startswith("refused:") and "member 'train/cat/z.png' claims 41,943,040 bytes " \
        "from" in text and "over 100x" in text, text
    assert peak_mb < PEAK_MB, peak_mb
    record_peak("zip_ratio", peak_mb, src.stat().st_size)


def test_a_member_name_of_500000_characters_is_refused_by_its_length(tmp_path):
    """The names array is as wide as the longest name, for every image: 306 MB before."""
    folder = small_folder(tmp_path)
    name = "train/cat/" + "n" * 500_000 + ".png"
    src = tar_with(folder, tmp_path / "long.tar.gz",
                   [(_info(name, 100), bytes(100))])
    text, peak_mb = peak_of_fetch(src, tmp_path / "raw")
    assert text.startswith("refused:") and "a member's name is 500,014 characters long" in \
        text and "over the 1024 allowed" in text, text
    assert peak_mb < PEAK_MB, peak_mb
    record_peak("tar_long_name", peak_mb, src.stat().st_size)


def test_a_folder_1100_levels_deep_is_named_not_a_recursion_error(tmp_path):
    folder = small_folder(tmp_path)
    deep = folder / "train" / "cat"
    for _ in range(1100):                  # os.makedirs (and rmtree) recurse: not used here
        deep = deep / "d"
        deep.mkdir()
    try:
        with pytest.raises(SourceError, match=r"'train/cat/d/d/d/.*lies more than 64 folders "
                                              r"deep"):
            fetch(str(folder), tmp_path / "raw")
        assert not (tmp_path / "raw").exists()
    finally:
        while deep != folder / "train" / "cat":
            deep.rmdir()
            deep = deep.parent


def peak_of_decode(blob: bytes, tmp_path: Path) -> tuple[str, float]:
    """decode_one(blob) at the default limits in a fresh process: (outcome, peak RSS in MB)."""
    (tmp_path / "blob").write_bytes(blob)
    code = ("import re, sys\nfrom augvit.data.decode import PrepareError, decode_one\n"
            "try:\n    decode_one(open(sys.argv[1], 'rb').read(), 32, 'big16.png'); "
            "print('decoded')\n"
            "except PrepareError as e:\n    print('refused:', e)\n"
            "status = open('/proc/self/status').read()\n"
            "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', status)[1]) / 1024)\n")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "blob")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    text, peak = run.stdout.rsplit("\n", 2)[-3:-1]
    return text, float(peak)


def test_a_16_bit_png_is_held_to_the_decode_budget_in_bytes(tmp_path):
    """6000 x 6000 16-bit grey: 36 M pixels, under data.max_image_pixels (40 M), but 16-bit
    pixels cost 12 bytes each to decode (18 before), not an 8-bit pixel's 4."""
    blob = png(6000, 6000, 16, 0, itertools.repeat(bytes(12000), 6000))
    text, peak_mb = peak_of_decode(blob, tmp_path)
    assert text.startswith("refused:") and "'big16.png' is a 16-bit PNG image of 6000 x 6000: " \
        "decoding it takes 12 bytes a pixel, 432 MB, over the 160 MB that " \
        "data.max_image_pixels = 40,000,000 8-bit pixels may take" in text, text
    assert peak_mb < PEAK_MB, peak_mb
    record_peak("png_16_bit", peak_mb, len(blob))


# ------------------------------------------------------------------ local hub copies
def hub_folder(tmp_path: Path, monkeypatch, readme: str | None = None) -> Path:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hub = tmp_path / "hub"
    hub.mkdir()
    parquet_split(hub / "train.parquet", 4, 1)
    parquet_split(hub / "test.parquet", 2, 2)
    if readme:
        (hub / "README.md").write_text(readme)
    return hub


@pytest.mark.parametrize("path", ["../elsewhere.parquet", "ABSOLUTE", "data/../../elsewhere*"])
def test_a_readme_naming_data_files_outside_the_folder_is_refused(tmp_path, monkeypatch, path):
    """The README's configs name the files `datasets` reads: here one outside the folder."""
    parquet_split(tmp_path / "elsewhere.parquet", 6, 3)
    path = str(tmp_path / "elsewhere.parquet") if path == "ABSOLUTE" else path
    hub = hub_folder(tmp_path, monkeypatch, "---\nconfigs:\n- config_name: default\n"
                     "  data_files:\n  - split: train\n    path: " + path + "\n"
                     "  - split: test\n    path: test.parquet\n---\n# a dataset\n")
    with pytest.raises(SourceError, match=r"its README's data_files name .* for 'train': data "
                                          r"files are read from inside the dataset folder only"):
        fetch(str(hub), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_a_readme_naming_files_inside_the_folder_is_followed(tmp_path, monkeypatch):
    hub = hub_folder(tmp_path, monkeypatch, "---\nconfigs:\n- config_name: default\n"
                     "  data_files:\n  - split: train\n    path: test.parquet\n"
                     "  - split: test\n    path: test.parquet\n---\n")
    assert fetch(str(hub), tmp_path / "raw")["counts"] == {"train": 2, "test": 2}


def test_a_parquet_column_chunk_claiming_gigabytes_is_refused_from_its_footer(tmp_path,
                                                                              monkeypatch):
    """270 MB of zeros in one column chunk, zstd: a few KB on disk, decompressed whole; its
    footer tells."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    hub = hub_folder(tmp_path, monkeypatch)
    column = pa.repeat(pa.scalar(bytes(1_000_000), pa.binary()), 270)
    pq.write_table(pa.table({"pad": column}), hub / "train-bomb.parquet", compression="zstd",
                   row_group_size=270, use_dictionary=False)
    del column
    assert (hub / "train-bomb.parquet").stat().st_size < 1_000_000
    text, peak_mb = peak_of_fetch(hub, tmp_path / "raw")
    assert text.startswith("refused:") and "'train-bomb.parquet', row group 0, column 'pad': " \
        "decompresses to 270,0" in text and "over the 256 MB one column chunk may take" in \
        text, text
    assert peak_mb < PEAK_MB, peak_mb
    record_peak("parquet_chunk", peak_mb, (hub / "train-bomb.parquet").stat().st_size)


def test_a_dictionary_encoded_column_that_repeats_one_large_value_is_refused_unexpanded(
        tmp_path, monkeypatch):
    """One 500 KB value in the dictionary, referred to by 2,000 rows: a file of a few hundred
    bytes whose footer claims half a megabyte, and a gigabyte once `datasets` reads it."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    hub = hub_folder(tmp_path, monkeypatch)
    column = pa.array([bytes(500_000)] * 2000, pa.binary())
    pq.write_table(pa.table({"pad": column}), hub / "train-bomb.parquet", compression="zstd",
                   row_group_size=2000)
    del column
    chunk = pq.ParquetFile(hub / "train-bomb.parquet").metadata.row_group(0).column(0)
    assert chunk.has_dictionary_page and chunk.total_uncompressed_size < 1_000_000  # premise
    text, peak_mb = peak_of_fetch(hub, tmp_path / "raw")
    assert text.startswith("refused:") and "'train-bomb.parquet', row group 0, column 'pad': " \
        "decodes to 1,000,000,000 bytes" in text and "over the 256 MB" in text, text
    assert peak_mb < PEAK_MB, peak_mb
    record_peak("parquet_dictionary", peak_mb, (hub / "train-bomb.parquet").stat().st_size)


def test_a_run_length_encoded_column_is_bounded_by_its_count_of_values(tmp_path, monkeypatch):
    """Run-length encoding packs any number of equal values into a few bytes; the footer's
    count of values bounds what the chunk decodes to."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from augvit.data import sources
    monkeypatch.setattr(sources, "MAX_PARQUET_CHUNK_MB", 1)
    path = tmp_path / "runs.parquet"
    pq.write_table(pa.table({"label": pa.array([0] * 200_000, pa.int64())}), path,
                   row_group_size=200_000)
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).total_uncompressed_size < 1e6
    with pytest.raises(SourceError, match=r"column 'label': holds 200,000 values, up to "
                                          r"1,600,000 bytes, over the 1 MB"):
        sources.check_parquet_sizes(path, "data.source 'x'")


def test_prepare_prints_a_hostile_file_name_as_visible_text(tmp_path, capfd):
    """An image file name that is not UTF-8 and holds terminal escapes, not decodable: prepare
    names it among the skipped images, and the terminal sees text, not escapes."""
    folder = make_image_folder(tmp_path / "imgs", n_train=120, n_test=2, odd_images=False)
    evil = os.fsencode(folder / "train" / "cat") + b"/\x1b]0;owned\x07\x1b[2J\xff.png"
    with open(evil, "wb") as f:
        f.write(b"not an image")
    fetch(str(folder), tmp_path / "raw")
    capfd.readouterr()
    decode.prepare(data_params(image_size=8, val_fraction=0.25), tmp_path / "raw",
                   tmp_path / "prepared")
    out = capfd.readouterr().out
    assert "could not be decoded and were skipped" in out, out
    assert "\x1b" not in out and "\x07" not in out and "\udcff" not in out
    assert "\\x1b]0;owned\\x07\\x1b[2J\\xff.png" in out, out
