"""A change reruns only what it affects, for augmentation code: each version's recipe file
records the identity of its ops' code (augvit/augment/registry.py), so an edit to one op's
module retrains only the versions that use the op. Unit tests of that identity, then the real
`dvc repro` on a tiny project with the code edited."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from augvit.augment import registry
from augvit.params import AUG_OPS, parse_params
from conftest import DEFAULT_PARAMS, tiny_params
from stages import recipe as recipe_stage
from test_pipeline import ran, sh, tiny_project


def edited(ops_dir: Path, module: str) -> None:
    with (ops_dir / f"{module}.py").open("a") as f:
        f.write("# an edit that changes no behaviour, but the file\n")


@pytest.fixture
def ops_copy(tmp_path, monkeypatch) -> Path:
    """The op modules copied, and the registry pointed at the copy."""
    copy = tmp_path / "ops"
    shutil.copytree(registry.OPS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(registry, "OPS_DIR", copy)
    return copy


def changed_by(ops_dir: Path, module: str) -> set[str]:
    """The ops whose code identity an edit to ops/<module>.py changes."""
    before = registry.code_identity(AUG_OPS)
    edited(ops_dir, module)
    after = registry.code_identity(AUG_OPS)
    return {op for op in AUG_OPS if before[op] != after[op]}


@pytest.mark.parametrize("module,ops", [
    ("policy", {"rand_augment", "trivial_augment"}),
    ("crop", {"crop"}),
    ("hflip", {"hflip"}),
    ("mixup_cutmix", {"mixup", "cutmix"}),
    ("common", {"crop", "rand_augment", "trivial_augment", "color_jitter", "blur", "grayscale"}),
])
def test_an_edit_changes_the_identity_of_exactly_the_ops_running_the_file(ops_copy, module, ops):
    assert changed_by(ops_copy, module) == ops


def test_the_default_study_retrains_only_the_versions_using_the_edited_op(ops_copy):
    """An edit to RandAugment's code retrains no default version; one to RandomResizedCrop's
    retrains version_0, 1 and 2, not the control and not padcrop_flip."""
    params = parse_params(DEFAULT_PARAMS)
    versions = ["none", "padcrop_flip", "version_0", "version_1", "version_2"]
    assert set(params.versions) == set(versions)

    def identities() -> dict[str, dict[str, str]]:
        return {v: registry.code_identity(params.recipe(v)) for v in versions}

    before = identities()
    edited(ops_copy, "policy")
    assert identities() == before
    edited(ops_copy, "crop")
    after = identities()
    assert {v for v in versions if after[v] != before[v]} == {"version_0", "version_1",
                                                              "version_2"}


def test_the_recipe_file_records_each_ops_code(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    for version, ops in (("version_1", ["hflip", "crop", "color_jitter", "blur", "grayscale"]),
                         ("none", [])):
        out = tmp_path / f"{version}.json"
        recipe_stage.main(["--params", str(params), "--version", version, "--out", str(out)])
        written = json.loads(out.read_text())
        assert list(written["ops"]) == ops and list(written["code"]) == ops
        assert written["code"] == registry.code_identity(ops)
        assert all(len(h) == 64 for h in written["code"].values())


# ------------------------------------------------------------------ the real pipeline

@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The project copied, the default versions with tiny params, one seed, one epoch, after
    a full `dvc repro`."""
    proj = tiny_project(tmp_path_factory.mktemp("reruns"), {"train": {"epochs": 1}},
                        stale=("dvc.lock", "metrics", "reports", "recipes", "eval"))
    sh(proj, "dvc", "repro")
    return proj


def retrained(stages: set[str]) -> dict[str, set[str]]:
    """train@ and evaluate@ stages that ran, by kind: the versions they belong to."""
    return {kind: {s.split("@", 1)[1].split("-", 1)[0] for s in stages
                   if s.startswith(f"{kind}@")} for kind in ("train", "evaluate")}


VERSIONS = {"none", "padcrop_flip", "version_0", "version_1", "version_2"}


@pytest.mark.e2e
def test_an_edit_to_randaugment_retrains_nothing(project):
    edited(project / "augvit/augment/ops", "policy")
    stages = ran(sh(project, "dvc", "repro"))
    print("ran after the policy edit:", sorted(stages))
    assert retrained(stages) == {"train": set(), "evaluate": set()}
    assert stages - {"plots"} == {f"recipe@{v}" for v in VERSIONS}     # plots shows every op


@pytest.mark.e2e
def test_an_edit_to_the_crop_retrains_only_the_versions_using_it(project):
    recipe = project / "recipes/version_0.json"
    before = json.loads(recipe.read_text())["code"]
    edited(project / "augvit/augment/ops", "crop")
    stages = ran(sh(project, "dvc", "repro"))
    print("ran after the crop edit:", sorted(stages))
    using_crop = {"version_0", "version_1", "version_2"}
    assert retrained(stages) == {"train": using_crop, "evaluate": using_crop}
    assert {f"recipe@{v}" for v in VERSIONS} <= stages
    after = json.loads(recipe.read_text())["code"]
    assert after["crop"] != before["crop"] and after["hflip"] == before["hflip"]
