"""End to end through `dvc exp run`: the study's axes and the notebook's GPU preset, on tiny
generated data (the real DVC, Lightning and transformers; no download)."""
from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from conftest import make_image_folder, pack, read_model, tiny_params, with_study_versions
from test_pipeline import copy_tracked, env, ran, sh

pytestmark = pytest.mark.e2e


def new_project(tmp_path, n_train: int, n_test: int, **updates) -> object:
    archive = pack(make_image_folder(tmp_path / "imgs", n_train=n_train, n_test=n_test),
                   tmp_path / "tiny.tar.gz")
    proj = copy_tracked(tmp_path / "project")
    for stale in ("dvc.lock", "metrics/summary.json"):
        (proj / stale).unlink(missing_ok=True)
    params = tiny_params({"data": {"source": str(archive)}}, updates)
    if "versions" in updates:
        params["versions"] = updates["versions"]
        with_study_versions(params, list(updates["versions"]))
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(proj, "git", "init", "-q")
    sh(proj, "git", "add", "-A")
    sh(proj, "git", "commit", "-qm", "tiny project")
    return proj


def test_a_new_train_size_trains_only_that_size(tmp_path):
    proj = new_project(tmp_path, 12, 4, versions={"none": [], "padcrop_flip": ["hflip",
                                                                               "pad_crop"]},
                       study={"train_sizes": [12]})
    sh(proj, "dvc", "exp", "run")
    out = sh(proj, "dvc", "exp", "run", "-S", "study.train_sizes=[12,27]")
    trained = {s for s in ran(out) if s.startswith(("train@", "evaluate@"))}
    assert trained == {f"{s}@{v}-finetuned-27{k}" for v in ("none", "padcrop_flip")
                       for s, k in (("train", "-0"), ("evaluate", ""))}
    effect = json.loads((proj / "plots/size_effect.json").read_text())
    assert sorted(r["train_size"] for r in effect) == [12, 27]
    assert (proj / "plots/size_effect.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((proj / "metrics/summary.json").read_text())
    assert set(summary["padcrop_flip"]["finetuned"]) == {"n12", "n27"}
    # a size larger than the train split stops that run with a message naming it
    r = subprocess.run(["dvc", "exp", "run", "-S", "study.train_sizes=[12,99]"], cwd=proj,
                       env=env(), capture_output=True, text=True)
    assert r.returncode != 0
    assert "study.train_sizes: 99 is more than the 27 images of the train split" in \
        r.stdout + r.stderr, r.stdout + r.stderr


def test_the_notebooks_gpu_preset_runs_end_to_end(tmp_path):
    """The notebook-setting command of docs/gpu.md (the ViT-B/16 shape: patch 16, 224x224 input, frozen
    backbone) with `model.pretrained` a local save_pretrained folder of a randomly initialised
    ViT-B/16 config, on a few hundred images, one epoch: the pretrained-folder path, the 224
    resample and the frozen backbone through the whole pipeline."""
    from transformers import ViTConfig, ViTForImageClassification
    vit = tmp_path / "vit-b16"
    ViTForImageClassification(ViTConfig(image_size=224, patch_size=16, num_labels=21843)) \
        .save_pretrained(vit)
    proj = new_project(tmp_path, 20, 5)
    # the control and the grayscale contrast's pair: each version is one more ViT-B/16 to train
    out = sh(proj, "dvc", "exp", "run", "-n", "notebook-setting",
             "-S", "study.versions=[none,version_1,version_2]",
             "-S", f"model.pretrained={vit}", "-S", "model.image_size=224",
             "-S", "model.patch_size=16", "-S", "study.backbones=[frozen]",
             "-S", "study.train_sizes=[45]", "-S", "train.epochs=1", "-S", "train.batch_size=8",
             "-S", "train.lr=0.001", "-S", "train.warmup_epochs=0.5")
    trained = {s for s in ran(out) if s.startswith("train@")}
    assert trained == {f"train@{v}-frozen-45-0"
                       for v in ("none", "version_1", "version_2")}, trained
    details = json.loads((proj / "eval/none/frozen/n45/seed0.json").read_text())
    assert details["n_test"] == 15
    model = read_model(proj / "models/version_1/frozen/n45/seed0.safetensors")
    cfg = model["config"]
    assert cfg["image_size"] == 224 and cfg["freeze_backbone"] is True
    assert cfg["vit_config"]["hidden_size"] == 768 and cfg["vit_config"]["patch_size"] == 16
    assert cfg["vit_config"]["num_hidden_layers"] == 12
    # the pretrained folder's 21843-class head is replaced by one for the 3 classes
    assert model["state_dict"]["vit.classifier.weight"].shape == (3, 768)
