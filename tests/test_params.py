from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from stages.params import AUG_OPS, ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_changes(**dotted) -> dict:
    raw = copy.deepcopy(DEFAULT)
    for key, value in dotted.items():
        node = raw
        *parents, last = key.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return raw


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ParamsError) as e:
        parse_params(raw)
    return e.value.problems


def test_default_params_are_valid_and_hold_the_seed_versions():
    p = load_params(ROOT / "params.yaml")
    assert list(p.recipe("version_0")) == ["hflip", "crop"]
    assert list(p.recipe("version_1")) == ["hflip", "crop", "color_jitter", "blur", "grayscale"]
    assert list(p.recipe("version_2")) == ["hflip", "crop", "color_jitter", "blur"]
    cj = p.recipe("version_1")["color_jitter"]
    assert cj == {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.2}
    assert p.recipe("version_1")["blur"]["kernel_size"] == 3
    assert p.recipe("version_1")["grayscale"]["p"] == 0.2


def test_op_set_false_is_off_for_every_version():
    p = parse_params(with_changes(aug__grayscale=False))
    assert "grayscale" not in p.recipe("version_1")
    assert p.recipe("version_2") == parse_params(DEFAULT).recipe("version_2")
    # version_1 minus grayscale is exactly version_2's recipe
    assert p.recipe("version_1") == p.recipe("version_2")


@pytest.mark.parametrize("key,value,expect", [
    ("aug__greyscale", {"p": 0.2}, r"aug\.greyscale: unknown augmentation op"),
    ("aug__grayscale", 0.3, r"aug\.grayscale: got 0\.3; expected false"),
    ("aug__hflip", {"p": 1.5}, r"aug\.hflip\.p: got 1\.5; allowed: a probability"),
    ("aug__color_jitter", {"hue": 0.7}, r"aug\.color_jitter\.hue: got 0\.7"),
    ("aug__blur", {"kernel_size": 4}, r"aug\.blur\.kernel_size: got 4; allowed: an odd"),
    ("aug__blur", {"kernel_size": -3}, r"aug\.blur\.kernel_size: got -3"),
    ("aug__crop", {"scale": [0.9, 0.1]}, r"aug\.crop\.scale: got \[0\.9, 0\.1\]"),
    ("aug__crop", {"scale": "big"}, r"aug\.crop\.scale: got 'big'; expected a list"),
    ("train__epochs", 0, r"train\.epochs: got 0; allowed: a whole number >= 1"),
    ("train__epochs", "3", r"train\.epochs: got '3'; expected a whole number"),
    ("train__lr", -1, r"train\.lr: got -1\.0"),
    ("train__seeds", [], r"train\.seeds: got \[\]"),
    ("train__batchsize", 3, r"train\.batchsize: unknown key; allowed keys: seeds"),
    ("data__image_size", 0, r"data\.image_size: got 0"),
    ("data__val_fraction", 1.5, r"data\.val_fraction: got 1\.5"),
    ("model__patch_size", 5, r"model\.patch_size: got 5; allowed: a whole number >= 1 dividing"),
    ("model__freeze_backbone", ["yes"], r"model\.freeze_backbone\[0\]: got 'yes'"),
    ("versions", {}, r"versions: got \{\}; expected a non-empty mapping"),
    ("versions", {"version_0": ["hflip", "mixup"]}, r"versions\.version_0: unknown op 'mixup'"),
    ("versions", {"v 1": ["hflip"]}, r"versions\.v 1: invalid version name"),
    ("versions", {"v-1": ["hflip"]}, r"versions\.v-1: invalid version name"),
])
def test_each_bad_value_is_named_with_what_is_allowed(key, value, expect):
    problems = problems_of(with_changes(**{key: value}))
    assert any(re.search(expect, p) for p in problems), problems


def test_every_problem_is_reported_at_once():
    raw = with_changes(aug__greyscale={"p": 0.1}, train__lr=0, data__val_fraction=2.0)
    raw["model"]["num_heads"] = 5
    problems = problems_of(raw)
    assert len(problems) == 4, problems
    msg = str(ParamsError(problems))
    assert "4 problem(s)" in msg and "aug.greyscale" in msg and "train.lr" in msg


def test_unknown_section_and_missing_file(tmp_path):
    assert any("augs: unknown section" in p for p in problems_of({**DEFAULT, "augs": {}}))
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_dvc_yaml_tracks_every_param_that_changes_a_run():
    """train@ stages list model/train keys one by one: none may be forgotten.

    The axes (model.freeze_backbone, train.seeds) are excluded on purpose: they enter through
    the stage's matrix item, so adding a seed trains only that seed.
    """
    from dataclasses import fields

    from stages.params import ModelParams, TrainParams
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    tracked = set(dvc["stages"]["train"]["params"])
    axes = {"model.freeze_backbone", "train.seeds"}
    for section, cls in (("model", ModelParams), ("train", TrainParams)):
        for f in fields(cls):
            key = f"{section}.{f.name}"
            assert (key in tracked) != (key in axes), key
    assert set(AUG_OPS) == set(DEFAULT["aug"])
