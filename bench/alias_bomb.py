"""A YAML alias bomb in params.yaml: what DVC's own parse costs, and what the project's check does.

DVC reads params.yaml with its own YAML loader, which expands aliases (`&name` / `*name`), before
any stage of the project runs; the project's check (`python -m stages.validate --check-params`)
counts the values the aliases stand for before it builds them. This builds the project's
params.yaml with a few lines appended whose aliases stand for 10**LEVELS values, in a scratch
git + DVC repository holding the project's dvc.yaml, and runs both on it, recording each one's
wall time and peak resident memory:

    python -m bench.alias_bomb --out bench/results/security/alias_bomb.json

At the default 7 levels (10 million values) DVC takes minutes and gigabytes of memory.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bomb(levels: int) -> str:
    """YAML lines whose last alias stands for 10**levels values."""
    lines = ["bomb0: &bomb0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"bomb{i}: &bomb{i} [{', '.join([f'*bomb{i - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


def measure(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> dict:
    """Run cmd; its wall time, peak resident memory (the child's own, from wait4) and exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    shown = ["python" if c == sys.executable else c for c in cmd]    # no machine's path
    return {"command": " ".join(shown), "wall_s": round(wall, 1),
            "peak_mb": round(usage.ru_maxrss / 1024, 1),
            "exit": os.waitstatus_to_exitcode(status), "output_tail": out[-600:]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=int, default=7, help="aliases stand for 10**LEVELS values")
    ap.add_argument("--timeout", type=float, default=900, help="seconds DVC may take")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
        text = (ROOT / "params.yaml").read_text() + "\n" + bomb(args.levels)
        (repo / "params.yaml").write_text(text)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1"}
        for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
            subprocess.run(cmd, cwd=repo, env=env, check=True)
        res = {"values": 10 ** args.levels, "params_bytes": len(text.encode()),
               "bomb_bytes": len(bomb(args.levels).encode()),
               "machine": f"{platform.processor() or platform.machine()}, "
                          f"{os.cpu_count()} cores",
               "check": measure([sys.executable, "-m", "stages.validate", "--check-params"],
                                repo, env, 300),
               "dvc": measure(["dvc", "stage", "list"], repo, env, args.timeout)}
    for name in ("check", "dvc"):
        r = res[name]
        print(f"{r['command']}: exit {r['exit']}, {r['wall_s']} s, peak {r['peak_mb']:,} MB")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
