"""dvc.yaml against the code: every stage depends on exactly the project code it runs, and its
run paths are the library's layout. Both are derived here, not kept by hand."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

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


def stage_entry(cmd: str) -> str:
    words = cmd.split()
    return words[words.index("-m") + 1]


def code_deps(stage: dict) -> set[Path]:
    """The stage's deps that are project code: .py files, or folders holding them."""
    out = set()
    for d in stage.get("deps", []):
        path = ROOT / d
        if path.is_dir() and any(path.rglob("*.py")):
            out |= set(path.rglob("*.py"))
        elif path.suffix == ".py":
            out.add(path)
    return out


def stage_defs() -> dict[str, dict]:
    return {name: s.get("do", s) for name, s in DVC_YAML["stages"].items()}


@pytest.mark.parametrize("name", list(stage_defs()))
def test_stage_depends_on_exactly_the_code_it_runs(name):
    stage = stage_defs()[name]
    runs = code_run_by(stage_entry(stage["cmd"]))
    listed = code_deps(stage)
    rel = lambda paths: sorted(str(p.relative_to(ROOT)) for p in paths)  # noqa: E731
    assert not runs - listed, f"{name} runs code it does not depend on: {rel(runs - listed)}"
    assert not listed - runs, f"{name} depends on code it does not run: {rel(listed - runs)}"


def test_the_import_walk_sees_lazy_and_package_imports():
    """The derivation itself: it must find a function-level import and a package's parents."""
    files = {str(p.relative_to(ROOT)) for p in code_run_by("stages.train")}
    assert "augvit/training.py" in files and "augvit/augment/color.py" in files
    assert "augvit/augment/__init__.py" in files            # build_inputs lives there
    assert "augvit/params.py" in files and "augvit/io.py" in files


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
    for run in expected_runs:
        train, ev = stages[f"train@{run.stage_suffix}"], stages[f"evaluate@{run.stage_suffix}"]
        assert {o.def_path for o in train.outs} == {str(run.path("models", ".safetensors")),
                                                    str(run.path("dvclive"))}
        assert {o.def_path for o in ev.outs} == {str(run.path("metrics/runs", ".json")),
                                                 str(run.path("eval", ".json"))}
        assert str(run.path("models", ".safetensors")) in {d.def_path for d in ev.deps}
