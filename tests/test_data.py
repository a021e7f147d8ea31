"""download + prepare: every source kind, layout errors, odd images, the split, the batches."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from augvit.data import decode
from augvit.data.batches import ArrayBatches
from augvit.data.fetch import fetch
from augvit.data.sources import SourceError, read_hub, read_local
from augvit.io import load_arrays, load_json
from conftest import CLASSES, data_params, make_image_folder, pack


@pytest.mark.parametrize("suffix", ["dir", ".tar.gz", ".tar", ".zip"])
def test_every_local_source_kind_reads_the_same(tmp_path, image_folder, suffix):
    src = image_folder if suffix == "dir" else pack(image_folder, tmp_path / f"d{suffix}")
    record = fetch(str(src), tmp_path / "raw")
    assert record["classes"] == sorted(CLASSES)
    assert record["counts"] == {"train": 36, "test": 12}
    ref = fetch(str(image_folder), tmp_path / "raw_ref")
    assert record["content_sha256"] == ref["content_sha256"]   # independent of the container
    if suffix != "dir":
        assert len(record["archive_sha256"]) == 64


def test_archive_with_one_top_level_folder(tmp_path, image_folder):
    wrapped = tmp_path / "wrapped"
    shutil.copytree(image_folder, wrapped / "cifar10")
    splits, classes = read_local(pack(wrapped, tmp_path / "w.zip"))
    assert classes == sorted(CLASSES) and len(splits["train"].blobs) == 36


def test_prepare_converts_odd_images_and_splits_stratified(tmp_path, tiny_archive):
    fetch(str(tiny_archive), tmp_path / "raw")
    meta = decode.prepare(data_params(val_fraction=0.25, seed=3), tmp_path / "raw",
                          tmp_path / "prep")
    tr = load_arrays(tmp_path / "prep" / "train.npz")
    va = load_arrays(tmp_path / "prep" / "val.npz")
    te = load_arrays(tmp_path / "prep" / "test.npz")
    # grayscale, RGBA and 40x40 JPEG inputs all become (3, 32, 32) uint8
    assert tr["images"].shape == (27, 3, 32, 32) and tr["images"].dtype == np.uint8
    assert va["images"].shape == (9, 3, 32, 32) and te["images"].shape == (12, 3, 32, 32)
    assert np.bincount(va["labels"]).tolist() == [3, 3, 3]        # stratified
    assert meta["counts"] == {"train": 27, "val": 9, "test": 12}
    # the grayscale image (index 1 of each class) decoded to three equal channels
    assert meta["skipped"] == {"train": [], "test": []}


def test_split_is_deterministic_and_disjoint():
    labels = np.repeat(np.arange(10), 50)
    a = decode.stratified_split(labels, 0.1, seed=0)
    b = decode.stratified_split(labels, 0.1, seed=0)
    c = decode.stratified_split(labels, 0.1, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])
    assert not set(a[0]) & set(a[1]) and len(a[0]) + len(a[1]) == 500



def test_every_prefix_of_the_train_order_is_class_balanced():
    """A run of train size N takes the first N: balanced, and nested in every larger size."""
    labels = np.repeat(np.arange(10), [50, 50, 50, 50, 50, 50, 50, 50, 50, 30])
    train, _ = decode.stratified_split(labels, 0.1, seed=0)
    for n in (10, 90, 95, 250, 270):
        counts = np.bincount(labels[train[:n]], minlength=10)
        assert counts.max() - counts.min() <= 1, (n, counts)    # while every class has images
    assert np.bincount(labels[train]).tolist() == [45] * 9 + [27]   # all of them, once


def test_undecodable_image_is_skipped_named_and_counted(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "imgs", n_train=40)
    bad = folder / "train" / "dog" / "0005.png"
    bad.write_bytes(b"not an image at all")
    fetch(str(folder), tmp_path / "raw")
    meta = decode.prepare(data_params(), tmp_path / "raw", tmp_path / "prep")
    assert meta["skipped"]["train"] == ["train/dog/0005.png"]
    assert meta["counts"]["train"] + meta["counts"]["val"] == 119
    assert "train/dog/0005.png" in capsys.readouterr().out


def test_too_many_undecodable_images_fail_without_output(tmp_path):
    folder = make_image_folder(tmp_path / "imgs")
    for p in list((folder / "train" / "cat").iterdir())[:4]:
        p.write_bytes(b"garbage")
    fetch(str(folder), tmp_path / "raw")
    with pytest.raises(decode.PrepareError, match="cannot be decoded.*train/cat/"):
        decode.prepare(data_params(), tmp_path / "raw", tmp_path / "prep")
    assert not (tmp_path / "prep").exists()


@pytest.mark.parametrize("breakage,message", [
    ("missing", "no such file or folder"),
    ("unsupported", "not a folder nor a supported archive"),
    ("truncated", "truncated or corrupt"),
    ("corrupt_zip", "truncated or corrupt"),
    ("no_test", r"no images under test/"),
    ("class_mismatch", r"class folders differ.*only in train: \['frog'\]"),
    ("empty_class", r"class folder\(s\) test/dog/ hold no images"),
])
def test_bad_sources_get_a_clear_error_and_leave_no_output(tmp_path, image_folder, breakage,
                                                           message):
    src = tmp_path / "src"
    if breakage == "missing":
        src = tmp_path / "does-not-exist.tar.gz"
    elif breakage == "unsupported":
        src = tmp_path / "data.rar"
        src.write_bytes(b"x" * 100)
    elif breakage == "truncated":
        full = pack(image_folder, tmp_path / "full.tar.gz").read_bytes()
        src = tmp_path / "cut.tar.gz"
        src.write_bytes(full[: len(full) // 2])
    elif breakage == "corrupt_zip":
        src = tmp_path / "bad.zip"
        src.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    elif breakage == "no_test":
        shutil.rmtree(image_folder / "test")
        src = image_folder
    elif breakage == "class_mismatch":
        shutil.rmtree(image_folder / "test" / "frog")
        src = image_folder
    elif breakage == "empty_class":
        for p in (image_folder / "test" / "dog").iterdir():
            p.unlink()
        src = image_folder
    with pytest.raises(SourceError, match=message) as e:
        fetch(str(src), tmp_path / "raw")
    assert "data.source" in str(e.value)
    assert not (tmp_path / "raw").exists()


def test_unreachable_hub_says_so_and_how_to_use_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    with pytest.raises(SourceError, match="No network may be reachable.*local copy"):
        read_hub("uoft-cs/cifar10")


def test_source_record_and_class_order(tmp_path, tiny_archive):
    fetch(str(tiny_archive), tmp_path / "raw")
    rec = load_json(tmp_path / "raw" / "source.json")
    assert rec["source"] == str(tiny_archive) and rec["kind"] == "local"
    assert rec["classes"] == ["cat", "dog", "frog"]


def test_array_batches_shuffle_per_epoch_and_shard():
    images = torch.arange(10).view(10, 1, 1, 1).expand(10, 3, 2, 2)
    labels = torch.arange(10)
    epoch = [0]
    b = ArrayBatches(images, labels, 3, shuffle=True, drop_last=True, seed=0,
                     epoch_fn=lambda: epoch[0])
    e0 = torch.cat([y for _, y in b])
    assert len(b) == 3 and len(e0) == 9
    assert torch.equal(e0, torch.cat([y for _, y in b]))        # same epoch, same order
    epoch[0] = 1
    assert not torch.equal(e0, torch.cat([y for _, y in b]))
    ev = ArrayBatches(images, labels, 4)                         # eval: all of it, in order
    assert torch.equal(torch.cat([y for _, y in ev]), labels) and len(ev) == 3
    shards = [torch.cat([y for _, y in ArrayBatches(images, labels, 5, rank=r, world=2)])
              for r in range(2)]
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert len(shards[0]) == len(shards[1]) == 5


def test_hub_reader_on_a_local_hf_dataset(tmp_path, monkeypatch):
    """The Hugging Face code path (Image + ClassLabel features, undecoded bytes), fed from
    parquet files written here with `datasets` itself: no download."""
    import datasets
    from PIL import Image as PILImage
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    names = ["airplane", "automobile", "bird"]
    features = datasets.Features({"img": datasets.Image(),
                                  "label": datasets.ClassLabel(names=names)})
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        imgs = [PILImage.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
                for _ in range(n)]
        ds = datasets.Dataset.from_dict({"img": imgs, "label": [k % 3 for k in range(n)]},
                                        features=features)
        ds.to_parquet(str(tmp_path / "hub" / f"{split}.parquet"))
    splits, classes = read_hub(str(tmp_path / "hub"))
    assert classes == names
    assert len(splits["train"].blobs) == 6 and splits["test"].labels.tolist() == [0, 1, 2]
    assert splits["train"].blobs[0][:8] == b"\x89PNG\r\n\x1a\n"      # still encoded
    # a local folder of such parquet files is a valid data.source too
    record = fetch(str(tmp_path / "hub"), tmp_path / "raw")
    assert record["kind"] == "huggingface-local" and record["counts"] == {"train": 6, "test": 3}


def test_a_relative_source_means_the_projects_even_in_a_queued_experiments_copy(tmp_path):
    """`dvc exp run --queue` runs in <project>/.dvc/tmp/exps/<name>/: a relative data.source
    such as ../shared/data.tar.gz still names the file beside the project."""
    from augvit.data.fetch import local_path
    (tmp_path / "shared").mkdir()
    archive = tmp_path / "shared" / "data.tar.gz"
    archive.write_bytes(b"x")
    project = tmp_path / "project"
    copy = project / ".dvc" / "tmp" / "exps" / "tmpab12"
    copy.mkdir(parents=True)
    assert local_path("../shared/data.tar.gz", project).resolve() == archive.resolve()
    assert local_path("../../../../../shared/data.tar.gz", copy).resolve() == archive.resolve()
    assert local_path("../shared/data.tar.gz", copy).resolve() == archive.resolve()
    assert not local_path("../missing.tar.gz", copy).exists()        # still a clear error later


def test_a_list_of_sources_uses_the_first_that_is_there(tmp_path, tiny_archive):
    record = fetch([str(tmp_path / "not-here.tar.gz"), str(tiny_archive)], tmp_path / "raw")
    assert record["source"] == str(tiny_archive)
    assert record["skipped"][0]["source"] == str(tmp_path / "not-here.tar.gz")
    assert load_json(tmp_path / "raw" / "source.json")["skipped"] == record["skipped"]


def test_when_no_source_is_there_each_is_named(tmp_path):
    missing = [str(tmp_path / "a.tar.gz"), str(tmp_path / "b")]
    with pytest.raises(SourceError, match=r"none of its 2 sources is available.*a\.tar\.gz.*"
                                          r"no such file.*-S data.source=PATH"):
        fetch(missing, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_a_source_that_is_there_but_broken_stops_the_list(tmp_path, tiny_archive):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(tiny_archive.read_bytes()[:500])
    with pytest.raises(SourceError, match="truncated or corrupt"):
        fetch([str(broken), str(tiny_archive)], tmp_path / "raw")
