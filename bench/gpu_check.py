"""Helpers of bench/gpu_check.sh (stdlib and `packaging` only: they run before anything else is
installed, on a machine with network and on the offline GPU node).

    python bench/gpu_check.py wheels DEST NODE_PACKAGES   the wheels the node lacks, into DEST
    python bench/gpu_check.py size [--limit-mib N] PATH...  MiB of the bundle (tree + PATHs)
    python bench/gpu_check.py check-carried DIR    are the bundled packages' needs met there?
    python bench/gpu_check.py study-params FILE cuda|cpu   the notebook-shaped study's params
    python bench/gpu_check.py util CSV             summary of an nvidia-smi utilization trace

NODE_PACKAGES is what the node already has: the output of `python3 -m pip list
--format=freeze` run there (`name==version` lines; bare names are taken as present at any
version).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Needed by dvc (hydra-core) but published as a source archive only: built into a wheel here.
SDIST_ONLY = ["antlr4-python3-runtime==4.9.3"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def node_list(listing: Path) -> list[str]:
    """The node's packages as `name==version` or bare `name`, from a `pip list --format=freeze`
    (or `pip freeze`: a `name @ URL` line counts as `name`)."""
    if not listing.is_file():
        sys.exit(f"gpu_check: no list of the node's packages at {listing}: on the node, run "
                 "`python3 -m pip list --format=freeze > node-packages.txt` and bring it here")
    words = [w for line in listing.read_text().splitlines()
             if line.strip() and not line.startswith("#") for w in line.split()]
    return [w for w in words if w != "@" and "://" not in w and not w.startswith("-")]


def node_packages(listing: Path) -> set[str]:
    return {norm(w.split("==")[0]) for w in node_list(listing)}


def node_pins(listing: Path) -> list[str]:
    return [w for w in node_list(listing) if "==" in w]


def wheel_name(path: Path) -> str:
    return norm(path.name.split("-")[0])


GPU_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def needed_here(there: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """The direct dependencies (pyproject.toml) that the node lacks (`there`: what it has), at
    the versions the lock (requirements.txt) pins for the node's Python and platform. The lock
    says every version, so nothing here depends on what this Python has installed."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        sys.exit("gpu_check: needs the `packaging` module: run it with the project's Python "
                 "(`. .venv/bin/activate`, after `pip install -r requirements.txt`)")

    def reqs(name: str) -> list:
        lines = (line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines())
        return [Requirement(line) for line in lines if line and not line.startswith("-")]

    pins = {norm(r.name): f"{r.name}{r.specifier}" for r in reqs("requirements.txt")
            if r.marker is None or r.marker.evaluate(GPU_PYTHON)}
    import tomllib
    direct = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = [norm(r.name) for r in map(Requirement, direct) if norm(r.name) not in there]
    unpinned = [name for name in missing if name not in pins]
    if unpinned:
        sys.exit(f"gpu_check: requirements.txt pins no version of {', '.join(unpinned)}: "
                 "recompile the locks from pyproject.toml (bash .ci/lock)")
    return [pins[name] for name in missing]


def direct_dependencies() -> set[str]:
    import tomllib
    direct = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {norm(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0]) for line in direct}


def fetch_wheels(dest: Path, listing: Path) -> None:
    there = node_packages(listing)
    wanted = needed_here(there)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    pip = [sys.executable, "-m", "pip"]
    print(f"gpu_check: the node lacks {', '.join(wanted) or 'nothing'}; fetching them and their "
          "dependencies for CPython 3.12, manylinux x86_64")
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(dest), *SDIST_ONLY], check=True)
    plats = [a for p in PLATFORMS for a in ("--platform", p)]
    pins = dest / "node-pins.txt"
    pins.write_text("\n".join(node_pins(listing)) + "\n")
    subprocess.run([*pip, "download", "-q", "--only-binary=:all:", "--find-links", str(dest),
                    "--constraint", str(pins),
                    "--python-version", "3.12", "--implementation", "cp", *plats,
                    "--platform", "any", "-d", str(dest), *wanted], check=True)
    kept = there - capped_needs(dest, there)
    present = sorted(p for p in dest.glob("*.whl") if wheel_name(p) in kept)
    for p in present:
        p.unlink()
    # what the node itself provides to the project: its copies of the direct dependencies and of
    # the wheels left out above (the rehearsal installs these, at the node's versions)
    provided = sorted({wheel_name(p) for p in present} | (direct_dependencies() & kept))
    (dest / "provided-by-node.txt").write_text("".join(f"{n}\n" for n in provided))
    carried = sorted(dest.glob("*.whl"))
    mib = sum(p.stat().st_size for p in carried) / 2**20
    print(f"gpu_check: {len(carried)} wheels to bundle ({mib:.1f} MiB) in {dest}/; the node "
          f"provides {len(provided)} packages the project uses ({dest}/provided-by-node.txt)")


def requires(wheel: Path) -> list[str]:
    """Requires-Dist lines of a wheel (extras' lines left out)."""
    import zipfile
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    return [ln.split(":", 1)[1].strip() for ln in lines
            if ln.startswith("Requires-Dist:") and "extra ==" not in ln]


def capped_needs(dest: Path, there: set[str]) -> set[str]:
    """Packages the node has but that a bundled package pins or caps (==, <, <=, ~=): its
    version there may be too new, so they are bundled too (a lower bound alone is taken as met
    by the node's own version; `check-carried` verifies it there)."""
    from packaging.requirements import Requirement
    wheels = {wheel_name(p): p for p in dest.glob("*.whl")}
    carried, capped = {n for n in wheels if n not in there}, set()
    todo = list(carried)
    while todo:
        for spec in requires(wheels[todo.pop()]):
            req = Requirement(spec)
            name = norm(req.name)
            if name in wheels and name not in carried and \
                    any(s.operator in ("==", "<", "<=", "~=", "===") for s in req.specifier):
                carried.add(name)
                capped.add(name)
                todo.append(name)
    return capped


def bundle_size(carried: list[str], limit_mib: float | None) -> None:
    """Print the bundle's size (working tree + `carried` folders); refuse it over `limit_mib`,
    the most your way of moving files to the node takes (no limit when None)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    tree = sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())
    parts = {"working tree": tree}
    for c in carried:
        parts[c] = sum(p.stat().st_size for p in (ROOT / c).rglob("*") if p.is_file())
    total = sum(parts.values()) / 2**20
    limit = "no limit" if limit_mib is None else f"limit {limit_mib:g} MiB"
    print("gpu_check: the bundle: " + ", ".join(f"{k} {v / 2**20:.1f} MiB"
                                                for k, v in parts.items())
          + f"; total {total:.1f} MiB ({limit})")
    if limit_mib is not None and total > limit_mib:
        sys.exit(f"gpu_check: the bundle is {total:.1f} MiB, over --limit-mib {limit_mib:g}: "
                 "bundle a smaller data archive, or raise the limit (LIMIT_MIB=N for "
                 "gpu_check.sh) if your way to the node takes more.")


def check_carried(site: Path) -> None:
    """Every requirement of every bundled package is met by what is importable now."""
    from importlib.metadata import PackageNotFoundError, distribution, distributions
    from packaging.requirements import Requirement
    carried = {norm(d.metadata["Name"]) for d in distributions(path=[str(site)])}
    problems = []
    for name in sorted(carried):
        for spec in distribution(name).requires or []:
            req = Requirement(spec)
            if req.marker and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = distribution(req.name).version
            except PackageNotFoundError:
                problems.append(f"{name} needs {req}, which is missing")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{name} needs {req}, but {req.name} {have} is installed")
    if problems:
        sys.exit("gpu_check: the bundled packages' needs are not met:\n  " +
                 "\n  ".join(problems) + "\nRerun `bash bench/gpu_check.sh prepare` with a "
                 "fresh list of the node's packages (NODE_PACKAGES).")
    print(f"gpu_check: {len(carried)} carried packages, all their requirements met")


def study_params(path: Path, device: str) -> None:
    """The notebook's setting (README.md; random init: the node cannot download weights), one
    epoch; on a machine without CUDA a rehearsal size of it, same code paths."""
    import yaml
    p = yaml.safe_load(path.read_text())
    p["data"].update(source=".gpudata/cifar10-jpeg.tar.gz")
    train_split = round(50000 * (1 - p["data"]["val_fraction"]))      # all of CIFAR-10's
    p["model"].update(pretrained=None, image_size=224, patch_size=16, hidden_size=768,
                      num_layers=12, num_heads=12, mlp_ratio=4)
    p["study"]["versions"] = ["none", "version_0", "version_1", "version_2"]
    p["study"].update(baseline="none", seeds=[0], backbones=["frozen"], train_sizes=[train_split])
    p["train"].update(epochs=1, batch_size=256, lr=0.001, warmup_epochs=0.1,
                      precision="auto", accelerator="auto")
    p["eval"]["batch_size"] = 500
    if device != "cuda":     # rehearsal on a CPU: same shape of pipeline, a size a CPU can run
        p["study"]["train_sizes"] = [512]
        p["model"].update(hidden_size=64, num_layers=1, num_heads=2)
        p["train"]["batch_size"] = 64
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    print(f"gpu_check: study params for {device}: model {json.dumps(p['model'])}, "
          f"train {json.dumps(p['train'])}, study {json.dumps(p['study'])}")


BUSY_PERCENT = 90     # a sample at or above this utilization counts as a busy GPU


def util_summary(csv: Path) -> None:
    rows = []
    for line in csv.read_text().splitlines():
        parts = [x.strip() for x in line.split(",")]
        if len(parts) >= 3 and parts[1].split()[0].isdigit():
            rows.append((int(parts[1].split()[0]), int(parts[2].split()[0])))
    if not rows:
        print("gpu_check: no utilization samples")
        return
    util = [u for u, _ in rows]
    idle_mem = min(m for _, m in rows)
    busy = [u for u, m in rows if m > idle_mem + 512]      # a process holds the GPU
    def mean(x): return sum(x) / max(1, len(x))
    share = mean([u >= BUSY_PERCENT for u in busy])
    print(f"GPU utilization, {len(rows)} samples every 0.5 s: mean {mean(util):.1f}%; while a "
          f"process held GPU memory ({len(busy)} samples): mean {mean(busy):.1f}%, "
          f"share >= {BUSY_PERCENT}%: {share:.0%}; "
          f"peak memory {max(m for _, m in rows)} MiB")


def mib_limit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        sys.exit(f"gpu_check: --limit-mib takes a number of MiB above 0, got {text!r}")
    return value


def main() -> None:
    cmd, *args = sys.argv[1:] or ["help"]
    if cmd == "wheels" and len(args) == 2:
        fetch_wheels(Path(args[0]), Path(args[1]))
    elif cmd == "size":
        limit = None
        if args[:1] == ["--limit-mib"]:
            limit = mib_limit(args[1] if len(args) > 1 else "")
            args = args[2:]
        bundle_size(args, limit)
    elif cmd == "check-carried":
        check_carried(Path(args[0]))
    elif cmd == "study-params":
        study_params(Path(args[0]), args[1])
    elif cmd == "util":
        util_summary(Path(args[0]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
