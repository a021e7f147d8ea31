"""Helpers of the SLURM job scripts (slurm/).

    python -m augvit.cluster check            # exit 1, naming them, if an input differs from HEAD
    python -m augvit.cluster command STAGE    # the stage's command line, as dvc.yaml resolves it

`check`: every array task trains in its own checkout of one commit, so the study's inputs
must be committed before it is submitted.
An input is a file that a stage of dvc.yaml depends on (code, params.yaml, dvc.yaml itself)
and no stage writes. A changed pipeline output (dvc.lock, metrics, plots) is fine: the tasks
make their own, and the gather job writes the study's into this workspace.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def _under(path: Path, roots: set[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def changed_files(root: Path) -> list[Path]:
    """Files git sees modified, added, deleted or untracked (not ignored), absolute."""
    out = subprocess.run(["git", "status", "--porcelain=v1", "-z", "--untracked-files=all"],
                         cwd=root, capture_output=True, text=True, check=True).stdout
    entries, paths = out.split("\0"), []
    i = 0
    while i < len(entries):
        entry = entries[i]
        if entry:
            paths.append(root / entry[3:])
            if entry[0] in "RC":                      # a rename also names its source
                i += 1
        i += 1
    return paths


def uncommitted_inputs(root: Path) -> list[str]:
    """The study's inputs that differ from the commit (relative paths, sorted)."""
    from dvc.repo import Repo
    root = root.resolve()
    with Repo(str(root)) as repo:
        stages = list(repo.index.stages)
        inputs = {Path(d.fs_path) for s in stages for d in s.deps}
        inputs |= {Path(s.dvcfile.path).resolve() for s in stages}
        outputs = {Path(o.fs_path) for s in stages for o in s.outs}
    return sorted(str(p.relative_to(root)) for p in changed_files(root)
                  if _under(p, inputs) and not _under(p, outputs))


def stage_command(root: Path, name: str) -> str:
    """A stage's command, for a launcher (srun) to start on every node; `dvc commit` records
    its outputs afterwards, as `dvc repro` would have."""
    from dvc.repo import Repo
    with Repo(str(root)) as repo:
        stages = {s.addressing: s for s in repo.index.stages}
        if name not in stages:
            raise SystemExit(f"no stage {name!r} in dvc.yaml (dvc stage list names them)")
        cmd = stages[name].cmd
        return " && ".join(cmd) if isinstance(cmd, list) else cmd


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m augvit.cluster", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["check", "command"])
    ap.add_argument("stage", nargs="?", help="for `command`: a stage, e.g. train@<run>")
    args = ap.parse_args(argv)
    if args.command == "command":
        if not args.stage:
            ap.error("command needs a stage name, e.g. train@version_0-finetuned-500-0")
        print(stage_command(Path.cwd(), args.stage))
        return
    changed = uncommitted_inputs(Path.cwd())
    if changed:
        print("The study's inputs differ from the last commit, which the array tasks check out:"
              "\n" + "\n".join(f"  {p}" for p in changed) +
              "\nCommit them (git commit), or undo them, and submit again.", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
