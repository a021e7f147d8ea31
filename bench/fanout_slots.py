"""How to share a machine's cores between trainings: the same trainings fanned out as N slots
of T threads (python -m augvit.fanout --cpu-slots N --threads T), timed, for each N x T given.

    python bench/fanout_slots.py --source DATA --out bench/results/fanout/NAME.json \\
        --set 'study.versions=[none,version_0]' --set 'study.seeds=[0,1]' 2x1 1x2

It works in a temporary copy of the project (git-tracked files, `params.yaml` with the --set
changes and data.source set to DATA): the shared stages once, untimed; then for each
configuration the trainings from scratch (their outputs, dvc.lock entries and run-cache
removed first), timed from start to the last training's record. The JSON holds the wall time,
each training's time, and a digest of each trained model's tensors, so configurations that
trained the very same models can be told apart from ones that did not.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from augvit.environment import cpu_description  # noqa: E402


def copy_project(dst: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    for stale in ("dvc.lock", "metrics", "reports", "eval", "plots", "models", "dvclive"):
        shutil.rmtree(dst / stale, ignore_errors=True) if (dst / stale).is_dir() else \
            (dst / stale).unlink(missing_ok=True)
    return dst


def set_key(params: dict, spec: str) -> None:
    key, _, value = spec.partition("=")
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[leaf] = yaml.safe_load(value)


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                       text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}"
                         f"{r.stderr[-4000:]}")
    return r.stdout + r.stderr


def forget_trainings(project: Path) -> None:
    """The trainings as if never run: outputs, resume folders, dvc.lock entries, run-cache."""
    for d in ("models", "dvclive", ".resume", ".dvc/cache/runs", ".dvc/tmp/fanout"):
        shutil.rmtree(project / d, ignore_errors=True)
    lock = project / "dvc.lock"
    data = yaml.safe_load(lock.read_text())
    data["stages"] = {k: v for k, v in data["stages"].items() if not k.startswith("train@")}
    lock.write_text(yaml.safe_dump(data, sort_keys=False))


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children and their own."""
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def model_digests(project: Path) -> dict[str, str]:
    from safetensors import safe_open
    out = {}
    for f in sorted((project / "models").rglob("*.safetensors")):
        h = hashlib.sha256()
        with safe_open(str(f), "pt") as m:
            for k in sorted(m.keys()):
                h.update(k.encode() + m.get_tensor(k).numpy().tobytes())
        out[str(f.relative_to(project / "models"))] = h.hexdigest()[:16]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+", help="slots x threads, e.g. 2x1 1x2")
    ap.add_argument("--source", required=True, help="data.source for the copy")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params.yaml change (the value read as YAML); repeatable")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    configs = [tuple(map(int, re.fullmatch(r"(\d+)x(\d+)", c).groups())) for c in args.configs]

    with tempfile.TemporaryDirectory(prefix="fanout-bench-") as tmp:
        project = copy_project(Path(tmp) / "project")
        params = yaml.safe_load((project / "params.yaml").read_text())
        for spec in args.set:
            set_key(params, spec)
        params["data"]["source"] = str(Path(args.source).resolve())
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        git = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
               "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "b"]):
            run(cmd, project, git)
        fanout = [sys.executable, "-m", "augvit.fanout"]
        t0 = time.perf_counter()
        run([*fanout, "--steps", "shared"], project)
        print(f"shared stages: {time.perf_counter() - t0:.0f}s", flush=True)
        results = []
        cores = len(os.sched_getaffinity(0))
        for slots, threads in configs:
            forget_trainings(project)
            cpu0, load0, t0 = children_cpu(), os.getloadavg()[0], time.perf_counter()
            out = run([*fanout, "--steps", "runs", "--cpu-slots", str(slots),
                       "--threads", str(threads)], project)
            wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
            each = [int(s) for s in re.findall(r"\] train@\S+ trained in (\d+)s", out)]
            # the share of the machine's cores this configuration's processes got: well below
            # 1 means idle cores, or other work on the machine at the same time
            results.append({"slots": slots, "threads": threads, "wall_s": round(wall, 1),
                            "trainings": len(each), "training_s": each,
                            "cpu_s": round(cpu, 1), "core_share": round(cpu / wall / cores, 2),
                            "load_before": round(load0, 2),
                            "load_after": round(os.getloadavg()[0], 2),
                            "models": model_digests(project)})
            print(f"{slots} slot(s) x {threads} thread(s): {wall:.0f}s for {len(each)} "
                  f"trainings ({', '.join(f'{s}s' for s in each)}), {cpu:.0f} CPU-s "
                  f"({cpu / wall / cores:.0%} of {cores} cores)", flush=True)
    import torch
    record = {"machine": {**cpu_description(), "cores": cores,
                          "torch": torch.__version__},
              "study": {"versions": params["study"].get("versions", list(params["versions"])),
                        "seeds": params["study"]["seeds"],
                        "train_sizes": params["study"]["train_sizes"],
                        "epochs": params["train"]["epochs"],
                        "batch_size": params["train"]["batch_size"],
                        "model": {k: params["model"][k] for k in
                                  ("image_size", "patch_size", "hidden_size", "num_layers")}},
              "set": args.set, "configs": results,
              "same_models": len({json.dumps(r["models"], sort_keys=True)
                                  for r in results}) == 1}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.out}; same models in every configuration: {record['same_models']}")


if __name__ == "__main__":
    main()
