"""The lock: every third-party module the code imports is a direct dependency in
requirements.in, and requirements.txt pins every one of them (it is compiled from it)."""
from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions

from conftest import ROOT

CODE = ("augvit", "stages", "bench", "tests")
LOCAL = {"augvit", "stages", "bench"} | {p.stem for p in (ROOT / "tests").glob("*.py")}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(path) -> dict[str, str]:
    """name -> the requirement line, for every requirement in a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            out[normalized(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0])] = line
    return out


def third_party_imports() -> dict[str, set[str]]:
    """top-level module -> the files importing it, outside the stdlib and the project."""
    found: dict[str, set[str]] = {}
    for folder in CODE:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in LOCAL \
                            and not top.startswith("test_") and top != "__future__":
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_module_is_a_direct_dependency():
    direct = requirement_names(ROOT / "requirements.in")
    dists = packages_distributions()
    missing = {}
    for module, files in third_party_imports().items():
        names = {normalized(d) for d in dists.get(module, [module])}
        if not names & set(direct):
            missing[module] = sorted(files)
    assert not missing, (f"imported but not in requirements.in: {missing}; add each "
                         "distribution to requirements.in and recompile requirements.txt")


def test_the_lock_pins_every_direct_dependency_and_the_torch_pair():
    direct = requirement_names(ROOT / "requirements.in")
    lock = requirement_names(ROOT / "requirements.txt")
    assert set(direct) <= set(lock), sorted(set(direct) - set(lock))
    assert all("==" in line for line in lock.values()), "requirements.txt is not fully pinned"
    assert direct["torch"] == "torch==2.14.1" and direct["torchvision"] == "torchvision==0.29.1"
    assert lock["torch"] == "torch==2.14.1" and lock["torchvision"] == "torchvision==0.29.1"
    assert "uv pip compile --universal" in (ROOT / "requirements.txt").read_text()
