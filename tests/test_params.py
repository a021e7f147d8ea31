"""params.yaml validation: every problem at once, each naming key, bad value and what is allowed."""
from __future__ import annotations

import copy
import re

import pytest

from augvit.params import AUG_OPS, ParamsError, load_params, parse_params
from conftest import DEFAULT_PARAMS, ROOT


def with_changes(**dotted) -> dict:
    """DEFAULT_PARAMS with keys set (a__b__c=value); value DELETE removes the key."""
    raw = copy.deepcopy(DEFAULT_PARAMS)
    for key, value in dotted.items():
        node = raw
        *parents, last = key.split("__")
        for p in parents:
            node = node[p]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return raw


DELETE = object()


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ParamsError) as e:
        parse_params(raw)
    return e.value.problems


def test_default_params_are_valid_and_hold_the_seed_versions():
    p = parse_params(DEFAULT_PARAMS)
    assert list(p.recipe("version_0")) == ["hflip", "crop"]
    assert list(p.recipe("version_1")) == ["hflip", "crop", "color_jitter", "blur", "grayscale"]
    assert list(p.recipe("version_2")) == ["hflip", "crop", "color_jitter", "blur"]
    cj = p.recipe("version_1")["color_jitter"]
    assert cj == {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.2}
    assert p.recipe("version_1")["blur"]["kernel_size"] == 3
    assert p.recipe("version_1")["grayscale"]["p"] == 0.2
    assert p.study.baseline == "none" and p.recipe("none") == {}       # the control
    assert set(AUG_OPS) == set(DEFAULT_PARAMS["aug"])


def test_op_set_false_is_off_for_every_version():
    p = parse_params(with_changes(aug__grayscale=False))
    assert "grayscale" not in p.recipe("version_1")
    assert p.recipe("version_2") == parse_params(DEFAULT_PARAMS).recipe("version_2")
    # version_1 minus grayscale is exactly version_2's recipe
    assert p.recipe("version_1") == p.recipe("version_2")


@pytest.mark.parametrize("key,value,expect", [
    ("aug__greyscale", {"p": 0.2}, r"aug\.greyscale: unknown augmentation op"),
    ("aug__grayscale", 0.3, r"aug\.grayscale: got 0\.3; expected false"),
    ("aug__hflip", {"p": 1.5}, r"aug\.hflip\.p: got 1\.5; allowed: a probability in \[0, 1\]"),
    ("aug__hflip", {"p": 0.5, "q": 1}, r"aug\.hflip\.q: unknown key; allowed keys: p"),
    ("aug__color_jitter", {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.7},
     r"aug\.color_jitter\.hue: got 0\.7; allowed: a number in \[0, 0\.5\]"),
    ("aug__blur", {"kernel_size": 4, "sigma": [0.1, 2.0]},
     r"aug\.blur\.kernel_size: got 4; allowed: an odd"),
    ("aug__blur", {"kernel_size": -3, "sigma": [0.1, 2.0]}, r"aug\.blur\.kernel_size: got -3"),
    ("aug__crop", {"scale": [0.9, 0.1], "ratio": [0.75, 1.33]},
     r"aug\.crop\.scale: got \[0\.9, 0\.1\]; allowed: \[min, max\] with 0 < min <= max <= 1"),
    ("aug__crop", {"scale": "big", "ratio": [0.75, 1.33]}, r"aug\.crop\.scale: got 'big'"),
    ("aug__crop", {"scale": [0.5], "ratio": [0.75, 1.33]}, r"aug\.crop\.scale: got \[0\.5\]"),
    ("aug__crop", {"ratio": [0.75, 1.33]}, r"aug\.crop\.scale: missing; allowed: \[min, max\]"),
    ("aug__blur", DELETE, r"aug\.blur: missing; allowed: false or a mapping"),
    ("train__epochs", 0, r"train\.epochs: got 0; allowed: a whole number >= 1"),
    ("train__epochs", "3", r"train\.epochs: got '3'; allowed: a whole number"),
    ("train__epochs", True, r"train\.epochs: got True; allowed: a whole number"),
    ("train__epochs", DELETE, r"train\.epochs: missing; allowed: a whole number >= 1"),
    ("train__lr", -1, r"train\.lr: got -1; allowed: a number > 0"),
    ("train__batchsize", 3, r"train\.batchsize: unknown key; allowed keys: epochs, batch_size"),
    ("train__warmup_epochs", 999.0, r"train\.warmup_epochs: got 999\.0; allowed: a number in "
                                  r"\[0, train\.epochs=\d+\]"),
    ("train__precision", "fp8", r"train\.precision: got 'fp8'; allowed: auto, 32-true"),
    ("data__image_size", 0, r"data\.image_size: got 0"),
    ("data__val_fraction", 1.5, r"data\.val_fraction: got 1\.5"),
    ("data__sha256", "abc", r"data\.sha256: got 'abc'; allowed: null or 64 lowercase hex"),
    ("model__patch_size", 5, r"model\.patch_size: got 5; allowed: a whole number >= 1 dividing"
                             r" model\.image_size \(32\)"),
    ("model__std", [0.5, 0.0, 0.5], r"model\.std: got \[0\.5, 0\.0, 0\.5\]; allowed: 3 finite numbers > 0"),
    ("study__seeds", [], r"study\.seeds: got \[\]; allowed: a non-empty list"),
    ("study__seeds", [0, 0], r"study\.seeds: got \[0, 0\]; allowed: a non-empty list of distinct"),
    ("study__backbones", ["yes"], r"study\.backbones: got \['yes'\]; allowed: .*\[finetuned\]"),
    ("study__baseline", "version_9", r"study\.baseline: got 'version_9'; allowed: one of "
                                     r"study\.versions \(none, version_0, version_1"),
    ("study__versions", ["none", "deit"], r"study\.versions: got \['none', 'deit'\]; allowed: "
                                          r"distinct names defined under versions"),
    ("study__contrasts", {"g": ["version_1", "padcrop_flip"]},
     r"study\.contrasts\.g: got \['version_1', 'padcrop_flip'\]; allowed: two different "
     r"versions of study\.versions"),
    ("study__train_sizes", [5000, 0], r"study\.train_sizes: got \[5000, 0\]; allowed: a "
                                      r"non-empty list of distinct whole numbers >= 1"),
    ("study__train_sizes", [], r"study\.train_sizes: got \[\]"),
    ("versions", {}, r"versions: got \{\}; expected a non-empty mapping"),
    ("versions", {"version_0": ["hflip", "autoaugment"]},
     r"versions\.version_0: unknown op 'autoaugment'"),
    ("versions", {"v": ["crop", "pad_crop"]}, r"versions\.v: .*crop and pad_crop do the same job"),
    ("versions", {"v": ["rand_augment", "trivial_augment"]},
     r"versions\.v: .*rand_augment and trivial_augment do the same job"),
    ("aug__pad_crop", {"padding": 0, "fill": "zero"}, r"aug\.pad_crop\.padding: got 0"),
    ("aug__pad_crop", {"padding": 4, "fill": "edge"},
     r"aug\.pad_crop\.fill: got 'edge'; allowed: zero \(black\) or reflect"),
    ("aug__rand_augment", {"num_ops": 2, "magnitude": 31},
     r"aug\.rand_augment\.magnitude: got 31; allowed: a whole number in \[0, 30\]"),
    ("aug__trivial_augment", {"magnitude": 3}, r"aug\.trivial_augment\.magnitude: unknown key"),
    ("aug__erasing", {"p": 0.25, "scale": [0.5, 0.2], "ratio": [0.3, 3.3], "value": "random"},
     r"aug\.erasing\.scale: got \[0\.5, 0\.2\]"),
    ("aug__erasing", {"p": 0.25, "scale": [0.02, 0.33], "ratio": [0.3, 3.3], "value": 0},
     r"aug\.erasing\.value: got 0; allowed: random"),
    ("aug__mixup", {"alpha": 0}, r"aug\.mixup\.alpha: got 0; allowed: a number > 0"),
    ("versions", {"v 1": ["hflip"]}, r"versions: invalid version name 'v 1'"),
    ("versions", {"v-1": ["hflip"]}, r"versions: invalid version name 'v-1'"),
])
def test_each_bad_value_is_named_with_what_is_allowed(key, value, expect):
    problems = problems_of(with_changes(**{key: value}))
    assert any(re.search(expect, p) for p in problems), problems


def test_every_problem_is_reported_at_once():
    raw = with_changes(aug__greyscale={"p": 0.1}, train__lr=0, data__val_fraction=2.0,
                       model__num_heads=5, eval=DELETE)
    problems = problems_of(raw)
    assert len(problems) == 5, problems
    msg = str(ParamsError(problems))
    assert "5 problem(s)" in msg and "aug.greyscale" in msg and "train.lr" in msg
    assert "model.num_heads: got 5; allowed: a whole number >= 1 dividing model.hidden_size" \
        in msg and "eval: missing section" in msg


def test_unknown_section_and_missing_file(tmp_path):
    assert any("augs: unknown section" in p for p in problems_of({**DEFAULT_PARAMS, "augs": {}}))
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_params_are_immutable_once_loaded():
    p = parse_params(DEFAULT_PARAMS)
    with pytest.raises(Exception):
        p.train.epochs = 99


# ------------------------------------------------------------------ hostile params
# Values arrive by `dvc exp run -S` and Studio's form as well as by editing the file.

@pytest.mark.parametrize("key,value,expect", [
    ("study__seeds", [0, "1; touch PWNED #"], r"study\.seeds: got \[0, '1; touch PWNED #'\]"),
    ("study__train_sizes", ["500 && id"], r"study\.train_sizes: got \['500 && id'\]"),
    ("study__backbones", ["finetuned`id`"], r"study\.backbones: got \['finetuned`id`'\]"),
    ("data__seed", -1, r"data\.seed: got -1; allowed: a whole number in \[0, 4294967295\]"),
    ("data__seed", 2**32, r"data\.seed: got 4294967296"),
])
def test_values_that_could_reach_a_shell_or_a_raw_traceback_are_named(key, value, expect):
    problems = problems_of(with_changes(**{key: value}))
    assert any(re.search(expect, p) for p in problems), problems


def test_a_version_name_is_an_identifier():
    raw = copy.deepcopy(DEFAULT_PARAMS)
    raw["versions"]["v$(touch PWNED)"] = ["hflip"]
    assert any("invalid version name 'v$(touch PWNED)'" in p for p in problems_of(raw))


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    """The billion laughs: 9 levels of 10 aliases each, 1e9 values from 1 KB of YAML."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{k}: &a{k} [{', '.join(['*a%d' % (k - 1)] * 10)}]" for k in range(1, 9)]
    bomb = tmp_path / "params.yaml"
    bomb.write_text((ROOT / "params.yaml").read_text() + "bomb:\n" +
                    "".join(f"  {line}\n" for line in levels))
    assert bomb.stat().st_size < (ROOT / "params.yaml").stat().st_size + 2000
    with pytest.raises(ParamsError, match=r"YAML aliases .* expanded, it holds more than "
                                          r"100000 values"):
        load_params(bomb)


def test_an_oversized_params_file_is_refused(tmp_path):
    big = tmp_path / "params.yaml"
    big.write_text((ROOT / "params.yaml").read_text() + "# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ParamsError, match=r"bytes; allowed: at most 1048576"):
        load_params(big)


@pytest.mark.parametrize("key,value,expect", [
    ("model__mean", [0.5, float("nan"), 0.5], r"model\.mean: got \[0\.5, nan, 0\.5\]; allowed: 3 "
                                              r"finite numbers"),
    ("model__std", [0.5, float("inf"), 0.5], r"model\.std: got \[0\.5, inf, 0\.5\]; allowed: 3 "
                                             r"finite numbers > 0"),
])
def test_a_mean_or_std_that_is_not_a_finite_number_is_named(key, value, expect):
    """A NaN mean would normalize every image to NaN: a study of nothing, found only at the end."""
    assert any(re.search(expect, p) for p in problems_of(with_changes(**{key: value})))


def test_the_study_matrix_is_capped_by_a_key_the_message_names():
    raw = with_changes(study__seeds=list(range(100)), study__train_sizes=list(range(1, 51)))
    problems = problems_of(raw)
    assert any(p.startswith("study: got '20000 runs'; allowed: at most study.max_runs=500 runs")
               and "raise study.max_runs in params.yaml" in p for p in problems), problems
    parse_params(with_changes(study__seeds=list(range(100)), study__train_sizes=[1, 2],
                              study__looks=[100],
                              study__max_runs=800))          # 4 x 1 x 2 x 100 = 800: allowed


@pytest.mark.parametrize("name", ["a;touch PWNED", "../../x", "x y", "é", "a" * 65, "1a"])
def test_a_contrast_name_is_an_identifier(name):
    raw = with_changes(study__contrasts={name: ["version_1", "version_2"]})
    assert any(p.startswith("study.contrasts: got ") and "a contrast name of a letter" in p
               for p in problems_of(raw))


def test_keys_and_values_from_outside_reach_the_terminal_as_visible_text():
    raw = copy.deepcopy(DEFAULT_PARAMS)
    raw["versions"]["v\x1b]0;owned\x07\x1b[2J"] = ["hflip"]
    raw["aug"]["x\x1b[31m\nforged"] = {}
    with pytest.raises(ParamsError) as e:
        parse_params(raw)
    text = str(e.value)
    assert "\x1b" not in text and "\x07" not in text and "\\x1b[2J" in text
    assert "x\\x1b[31m\\x0aforged" in text and "\nforged" not in text


@pytest.mark.parametrize("depth", [900, 5000])
def test_values_nested_past_python_s_recursion_are_named(tmp_path, depth):
    deep = tmp_path / "params.yaml"
    deep.write_text(re.sub(r"(?m)^  seeds: \[[0-9, ]*\]", "  seeds: " + "[" * depth + "0" +
                           "]" * depth, (ROOT / "params.yaml").read_text()))
    assert "[[[" in deep.read_text()
    with pytest.raises(ParamsError, match=r"nest deeper than Python parses"):
        load_params(deep)


def test_the_design_allows_no_more_seeds_than_its_last_look():
    problems = problems_of(with_changes(study__seeds=list(range(31)), study__looks=[10, 20, 30]))
    assert any(p.startswith("study.seeds: got '31 seeds'; allowed: at most the design's last "
                            "look, 30 seeds") and "extend study.looks" in p for p in problems)
    assert any(p.startswith("study.looks: got [20, 10]") for p in
               problems_of(with_changes(study__looks=[20, 10])))
    assert any(p.startswith("study.spending") for p in
               problems_of(with_changes(study__spending="haybittle")))
