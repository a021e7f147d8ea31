"""The locks: every third-party module the code imports is a direct dependency in
pyproject.toml (the tests' own in its `test` group), each lock pins every one of them, the
runtime lock holds no test tool, and each resolves for Linux, macOS and Windows."""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from importlib.metadata import packages_distributions

import pytest

from conftest import ROOT

# What each lock must resolve for (uv's names); macOS 14 or newer: PyTorch's arm64 wheels need it
PLATFORMS = ("x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu", "aarch64-apple-darwin",
             "x86_64-pc-windows-msvc")

CODE = ("augvit", "stages", "bench", "tests")
LOCAL = {"augvit", "stages", "bench"} | {p.stem for p in (ROOT / "tests").glob("*.py")}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str:
    return normalized(re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0])


def requirement_names(path) -> dict[str, str]:
    """name -> the requirement line, for every requirement in a requirements file."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            out[requirement_name(line)] = line
    return out


def declared(group: str | None = None) -> dict[str, str]:
    """name -> requirement: pyproject.toml's runtime dependencies, or one dependency group."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = project["dependency-groups"][group] if group else project["project"]["dependencies"]
    return {requirement_name(r): r for r in reqs}


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
    runtime, test = declared(), declared("test")
    dists = packages_distributions()
    missing = {}
    for module, files in third_party_imports().items():
        names = {normalized(d) for d in dists.get(module, [module])}
        in_tests_only = all(f.startswith("tests/") for f in files)
        if not names & (set(runtime) | (set(test) if in_tests_only else set())):
            missing[module] = sorted(files)
    assert not missing, (f"imported but not declared in pyproject.toml: {missing}; add each "
                         "distribution (the tests' own to the test group) and run .ci/lock")


def test_the_locks_pin_every_direct_dependency_and_the_torch_pair():
    runtime, test = declared(), declared("test")
    lock, test_lock = (requirement_names(ROOT / f) for f in
                       ("requirements.txt", "requirements-test.txt"))
    assert set(runtime) <= set(lock), sorted(set(runtime) - set(lock))
    assert set(runtime) | set(test) <= set(test_lock), sorted(set(runtime) | set(test) -
                                                             set(test_lock))
    assert not set(test) & set(lock), "the runtime lock holds test tools"
    for pins in (lock, test_lock):
        assert all("==" in line for line in pins.values()), "a lock is not fully pinned"
    assert {k: v for k, v in test_lock.items() if k in lock} == lock   # the same versions
    assert runtime["torch"] == "torch==2.14.1" and runtime["torchvision"] == "torchvision==0.29.1"
    assert lock["torch"] == "torch==2.14.1" and lock["torchvision"] == "torchvision==0.29.1"
    for name in ("requirements.txt", "requirements-test.txt", "requirements-torch-index.txt"):
        assert "bash .ci/lock" in (ROOT / name).read_text().splitlines()[1], name


def test_the_torch_index_lock_leaves_the_cuda_libraries_to_the_index():
    """PyTorch's CPU-only (or older-CUDA) wheels come from its own index; this lock must not
    pull PyPI's CUDA 13 libraries in beside them, and pins all else as the main lock does."""
    lock, index_lock = (requirement_names(ROOT / f) for f in
                        ("requirements.txt", "requirements-torch-index.txt"))
    cuda = sorted(n for n in index_lock if re.match(r"(nvidia-cu|nvidia-nccl|cuda-|triton)", n))
    assert not cuda, cuda
    assert index_lock["torch"] == lock["torch"]
    assert {k: v for k, v in index_lock.items() if k in lock} == \
        {k: lock[k] for k in index_lock}


def registry_problem() -> str | None:
    """None if uv and the package index it would use are reachable; else why not."""
    if shutil.which("uv") is None:
        return "uv is not installed (it is in pyproject.toml's test group)"
    index = os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or \
        "https://pypi.org/simple"
    try:
        urllib.request.urlopen(f"{index.rstrip('/')}/torch/", timeout=15).close()
    except OSError as e:
        return f"the package index {index} is unreachable ({e}); the resolver needs it"
    return None


@pytest.mark.e2e
@pytest.mark.parametrize("lock", ["requirements.txt", "requirements-test.txt"])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_each_lock_resolves_for_each_platform(platform, lock, tmp_path):
    if why := registry_problem():
        pytest.skip(why)
    r = subprocess.run(["uv", "pip", "compile", "--quiet", "--python-version", "3.11",
                        "--python-platform", platform, "--no-header", lock,
                        "-o", str(tmp_path / "resolved.txt")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MACOSX_DEPLOYMENT_TARGET": "14.0"})
    assert r.returncode == 0, f"{lock} does not resolve for {platform}:\n{r.stderr}"
    resolved = requirement_names(tmp_path / "resolved.txt")
    assert resolved["torch"] == "torch==2.14.1"
