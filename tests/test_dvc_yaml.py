"""dvc.yaml against the code: every stage depends on exactly the project code it runs, and its
run paths are the library's layout. Both are derived here, not kept by hand."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from augvit.augment.registry import OP_MODULES, OPS_DIR, op_files
from augvit.params import AUG_OPS
from conftest import ROOT

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PACKAGES = ("augvit", "stages")


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name (None for third-party modules)."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    names = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:                                   # relative import
                mod = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                               + ([mod] if mod else []))
            names.add(mod)
            names |= {f"{mod}.{a.name}" for a in node.names}   # `from pkg import module`
    return names


def is_docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def code_run_by(entry: str) -> set[Path]:
    """The project files that `python -m entry` runs: the module, its imports, transitively,
    with the parent packages each import executes (an `__init__.py` that is only a docstring
    runs no code and is left out)."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for k in range(1, len(parts) + 1):                    # parents run first
            path = module_file(".".join(parts[:k]))
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(imports_of(path))
    return {p for p in seen if not (p.name == "__init__.py" and is_docstring_only(p))}


def stage_entries(cmd: str) -> list[str]:
    """Every module a stage's command line runs (`python -m X ...`), in order: a stage that
    holds params values first runs the params check (stages.validate), then its own."""
    words = cmd.split()
    return [words[i + 1] for i, w in enumerate(words) if w == "-m"]


def stage_entry(cmd: str) -> str:
    return stage_entries(cmd)[-1]


def code_deps(stage: dict) -> set[Path]:
    """The stage's deps that are project code: .py files, or folders holding them."""
    out = set()
    for d in stage.get("deps", []):
        path = ROOT / d
        if path.is_dir() and any(path.rglob("*.py")):
            out |= {p for p in path.rglob("*.py")
                    if not (p.name == "__init__.py" and is_docstring_only(p))}
        elif path.suffix == ".py":
            out.add(path)
    return out


def stage_defs() -> dict[str, dict]:
    return {name: s.get("do", s) for name, s in DVC_YAML["stages"].items()}


# ------------------------------------------------------------------ op modules, imported by name
# build_inputs and mix_batch import an op's module by name (augvit/augment/registry.py), only when
# a recipe uses the op: no import statement names it, so the walk above cannot see it. Code that
# runs the registry may run any op's code; a stage running the registry depends on all of it,
# unless it is covered another way, tested below.
REGISTRY = ROOT / "augvit/augment/registry.py"
OP_FILES = {path for op in OP_MODULES for path in op_files(op)}
OPS_HASHED = {"recipe"}           # reads every op file (registry.code_identity), runs none
OPS_COVERED = {
    "train": "its recipe file records the hash of each of its ops' files: "
             "test_train_sees_its_ops_code_through_its_recipe_file",
    "evaluate": "it runs no op: test_the_eval_path_imports_no_op_module",
}


def op_code() -> set[Path]:
    """Every file that any op's code runs: the op modules and, transitively, their imports."""
    return set().union(*(code_run_by(f"augvit.augment.ops.{module}")
                         for modules in OP_MODULES.values() for module in modules))


def stage_code(name: str, stage: dict) -> set[Path]:
    """The project files a stage runs (or, for the recipe stage, reads to hash them)."""
    runs = set().union(*(code_run_by(m) for m in stage_entries(stage["cmd"])))
    if name in OPS_HASHED:
        runs |= OP_FILES
    elif REGISTRY in runs and name not in OPS_COVERED:
        runs |= op_code()
    return runs


@pytest.mark.parametrize("name", list(stage_defs()))
def test_stage_depends_on_exactly_the_code_it_runs(name):
    stage = stage_defs()[name]
    runs = stage_code(name, stage)
    listed = code_deps(stage)
    rel = lambda paths: sorted(str(p.relative_to(ROOT)) for p in paths)  # noqa: E731
    assert not runs - listed, f"{name} runs code it does not depend on: {rel(runs - listed)}"
    assert not listed - runs, f"{name} depends on code it does not run: {rel(listed - runs)}"


def test_the_import_walk_sees_lazy_and_package_imports():
    """The derivation itself: it must find a function-level import and a package's parents."""
    files = {str(p.relative_to(ROOT)) for p in code_run_by("stages.train")}
    assert "augvit/training.py" in files and "augvit/augment/resample.py" in files
    assert "augvit/augment/__init__.py" in files            # build_inputs lives there
    assert "augvit/params.py" in files and "augvit/io.py" in files
    assert "augvit/augment/registry.py" in files            # so op code may run: stage_code
    assert not any("augment/ops/" in f for f in files)      # imported by name: not seen here
    ops = {str(p.relative_to(ROOT)) for p in op_code()}
    assert {"augvit/augment/ops/crop.py", "augvit/augment/ops/common.py"} <= ops


def test_the_registry_names_every_op_and_existing_files():
    assert set(OP_MODULES) == set(AUG_OPS)
    for op in AUG_OPS:
        assert op_files(op) and all(p.is_file() and p.parent == OPS_DIR for p in op_files(op))


@pytest.mark.parametrize("op", AUG_OPS)
def test_an_ops_code_identity_covers_every_op_file_it_runs(op):
    """The recipe hashes op_files(op): exactly the files of ops/ that the op's module runs."""
    runs = code_run_by(f"augvit.augment.ops.{OP_MODULES[op][0]}")
    assert {p for p in runs if p.parent == OPS_DIR} == set(op_files(op))


def test_train_sees_its_ops_code_through_its_recipe_file():
    """train does not list the op modules: its recipe file, a dep, changes with their code
    (the recipe stage depends on every op file and records their hashes: tests/test_reruns.py),
    and what op code runs outside ops/ is in train's own deps."""
    train, recipe = stage_defs()["train"], stage_defs()["recipe"]
    assert "recipes/${item.version}.json" in train["deps"]
    assert [next(iter(o)) if isinstance(o, dict) else o for o in recipe["outs"]] == \
        ["recipes/${key}.json"]
    assert OP_FILES <= code_deps(recipe) and OP_FILES == {p for p in op_code()
                                                          if p.parent == OPS_DIR}
    assert {p for p in op_code() if p.parent != OPS_DIR} <= code_deps(train)


def loaded_op_modules(recipe: dict) -> list[str]:
    """The op modules a fresh interpreter holds after the evaluate stage's imports and one
    build_inputs call with `recipe`."""
    probe = ("import json, sys, torch; import stages.evaluate; "
             "from augvit.augment import build_inputs; "
             f"build_inputs(torch.zeros(2, 3, 24, 32, dtype=torch.uint8), {recipe!r}, 16, "
             "[0.5] * 3, [0.5] * 3, torch.Generator()); "
             "print(json.dumps(sorted(m for m in sys.modules "
             "if m.startswith('augvit.augment.ops'))))")
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.splitlines()[-1])


def test_the_eval_path_imports_no_op_module():
    """evaluate does not list the op modules, so the eval path (build_inputs with {}) must
    never load one; the same probe sees a load where a recipe asks for an op."""
    assert loaded_op_modules({}) == []
    assert loaded_op_modules({"crop": {"scale": [0.08, 1.0], "ratio": [0.75, 1.33]}}) == \
        ["augvit.augment.ops", "augvit.augment.ops.common", "augvit.augment.ops.crop"]


def test_dvc_resolves_every_run_to_the_layouts_paths():
    """DVC's own resolution of the matrix stages (not a re-implementation of it)."""
    from dvc.repo import Repo

    from augvit.layout import runs
    from augvit.params import load_params
    p = load_params(ROOT / "params.yaml")
    with Repo(str(ROOT), config={"core": {"no_scm": True}}) as repo:
        stages = {s.addressing: s for s in repo.index.stages}
    expected_runs = runs(p)
    assert {n for n in stages if n.startswith("train@")} == \
        {f"train@{r.stage_suffix}" for r in expected_runs}
    assert {n for n in stages if n.startswith("evaluate@")} == \
        {f"evaluate@{r.group_suffix}" for r in expected_runs}
    for run in expected_runs:
        train, ev = stages[f"train@{run.stage_suffix}"], stages[f"evaluate@{run.group_suffix}"]
        assert {o.def_path for o in train.outs} == {str(run.path("models", ".safetensors")),
                                                    str(run.path("dvclive"))}
        # the group's folders hold each seed's file at the layout's path
        assert {o.def_path for o in ev.outs} == {str(run.path("metrics/runs").parent),
                                                 str(run.path("eval").parent)}
        assert str(run.path("models").parent) in {d.def_path for d in ev.deps}


def test_the_lock_holds_exactly_the_stages_dvc_yaml_defines():
    """No stale entries (a run removed from the matrix) and none missing: dvc.lock describes
    the committed study and nothing else."""
    from dvc.repo import Repo
    with Repo(str(ROOT), config={"core": {"no_scm": True}}) as repo:
        defined = {s.addressing for s in repo.index.stages}
    locked = set(yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"])
    assert not locked - defined, f"stale in dvc.lock: {sorted(locked - defined)[:10]}"
    assert not defined - locked, f"missing from dvc.lock: {sorted(defined - locked)[:10]}"
