"""The study's trainings fanned out over one node's devices, through DVC's own locking.

    python -m augvit.fanout                        # every GPU, one training each at a time
    python -m augvit.fanout --per-gpu 3            # three at a time on each GPU (a small model)
    python -m augvit.fanout --cpu-slots 2 --threads 1     # no GPU: two trainings, 1 thread each

Three steps, each a real `dvc repro` in this workspace, so `dvc.lock`, the cache and the
run-cache are written by DVC as if the stages had run one after another:

1. shared: `dvc repro <every stage the trainings depend on>` once (validate, download,
   prepare, the recipes), before anything runs in parallel.
2. runs: a queue of the `train@...` stages that `dvc status` reports changed, and one worker
   process per slot: `dvc --wait-for-lock repro --single-item train@<run>`, with the slot's
   device in its environment (CUDA_VISIBLE_DEVICES, or OMP/MKL thread counts and CPU cores).
   The largest train size goes first, so the slots finish together.
3. final: `dvc repro` once: the evaluations, compare, plots; the trainings are up to date.

Why this is safe with DVC: `dvc repro` holds the repository lock while it plans and while it
records a stage (dvc.lock, cache, run-cache) and releases it while the stage's command runs; it
marks the command's dependencies read and its outputs written in `.dvc/tmp/rwlock`, so
trainings that share data but not outputs run at once. `--single-item` because checking an
upstream stage takes its outputs' write lock, which a running training's read lock blocks
(DVC fails at once with "... is busy"); `--wait-for-lock` because another worker may hold the
repository lock for a moment while it records its run (DVC's default gives up after 3 s).

Killed (Ctrl-C, SIGTERM), it stops its workers; run again, it trains what is left, each killed
training resuming after its last completed epoch. Run again when done, it does nothing.
`--slice I/N` runs the I-th of N disjoint parts of the runs (a SLURM array task, slurm/);
`--pull` restores what the DVC remote's run-cache already holds instead of training it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from augvit.io import StageError
from augvit.layout import runs
from augvit.params import Params, load_params

LOG_DIR = Path(".dvc/tmp/fanout")       # one log per training; DVC and git ignore .dvc/tmp
RWLOCK = Path(".dvc/tmp/rwlock")         # DVC's table of the paths its processes read/write
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
RAN = re.compile(r"Running stage '([^']+)'")


class FanoutError(StageError):
    pass


@dataclass(frozen=True, eq=False)
class Slot:
    """One place a training runs: its name, its environment and (CPU) its cores. Each slot is
    its own place: slots compare and hash by identity (the running table is keyed by them)."""
    name: str
    env: dict[str, str]
    cpus: tuple[int, ...] = ()


@dataclass
class Result:
    stage: str
    slot: str
    code: int
    seconds: float
    trained: bool
    log: Path


@dataclass
class Plan:
    shared: list[str]
    runs: list[str]                       # train stages, largest train size first
    final: bool
    slots: list[Slot] = field(default_factory=list)


# ------------------------------------------------------------------ slots

def usable_cpus() -> list[int]:
    """The cores this process may use (a scheduler's allocation, taskset), in order."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(os.cpu_count() or 1))
    limit = os.environ.get("SLURM_CPUS_PER_TASK")
    return cpus[:int(limit)] if limit and limit.isdigit() and int(limit) > 0 else cpus


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES's entries when it is set (as a
    scheduler sets it for an allocation), else every GPU torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


def thread_env(threads: int) -> dict[str, str]:
    # torch reads OMP_NUM_THREADS when it starts: its thread count follows (no code sets it)
    return {var: str(threads) for var in THREAD_VARS}


def gpu_slots(gpus: list[str], per_gpu: int, devices_per_run: int, cpus: int,
              threads: int | None) -> list[Slot]:
    """`per_gpu` slots on each group of `devices_per_run` GPUs (train.devices: 1 is one GPU)."""
    groups = [gpus[i:i + devices_per_run]
              for i in range(0, len(gpus) - devices_per_run + 1, devices_per_run)]
    if not groups:
        raise FanoutError(f"train.devices is {devices_per_run} but {len(gpus)} GPU(s) are "
                          f"visible ({','.join(gpus) or 'none'}); lower train.devices or "
                          "run on a node with more GPUs.")
    n = len(groups) * per_gpu
    t = threads or max(1, cpus // n)
    return [Slot(f"gpu{','.join(g)}#{k}", {"CUDA_VISIBLE_DEVICES": ",".join(g), **thread_env(t)})
            for k in range(per_gpu) for g in groups]


def cpu_slots(n: int, threads: int | None, cpus: list[int]) -> list[Slot]:
    """`n` slots of `threads` threads each, pinned to their own cores when there are enough.
    CUDA_VISIBLE_DEVICES is emptied, so `train.accelerator: auto` picks the CPU."""
    t = threads or max(1, len(cpus) // n)
    pinned = n * t <= len(cpus)
    return [Slot(f"cpu{i}", {"CUDA_VISIBLE_DEVICES": "", **thread_env(t)},
                 tuple(cpus[i * t:(i + 1) * t]) if pinned else ())
            for i in range(n)]


def build_slots(args: argparse.Namespace, accelerator: str, devices_per_run: int) -> list[Slot]:
    cpus = usable_cpus()
    if args.cpu_slots is None and args.gpus != "none" and accelerator != "cpu":
        gpus = visible_gpus() if args.gpus == "auto" else args.gpus.split(",")
        if gpus:
            return gpu_slots(gpus, args.per_gpu, devices_per_run, len(cpus), args.threads)
        if accelerator == "gpu":
            raise FanoutError("train.accelerator is gpu but no GPU is visible; set it to auto "
                              "or cpu, or run on a GPU node.")
    return cpu_slots(args.cpu_slots or 1, args.threads, cpus)


def describe(slot: Slot) -> str:
    """'cpu0 (1 threads, cores 0)', 'gpu3#1 (4 threads)'."""
    cores = f", cores {','.join(map(str, slot.cpus))}" if slot.cpus else ""
    return f"{slot.name} ({slot.env.get('OMP_NUM_THREADS')} threads{cores})"


# ------------------------------------------------------------------ the plan

def parse_slice(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m or not int(m[1]) < int(m[2]):
        raise argparse.ArgumentTypeError(f"--slice {text!r}: expected I/N with 0 <= I < N, "
                                         "e.g. 0/4 (the first of four parts)")
    return int(m[1]), int(m[2])


def run_stages(params: Params, part: tuple[int, int] | None) -> list[str]:
    """The study's `train@` stages, largest train size first (a stable sort: params order
    within a size), then every N-th from the I-th when `part` is (I, N)."""
    study = sorted(runs(params), key=lambda r: -r.size)
    stages = [f"train@{r.stage_suffix}" for r in study]
    return stages[part[0]::part[1]] if part else stages


def dvc_graph(root: Path, stages: list[str]) -> tuple[list[str], list[str]]:
    """(every stage upstream of `stages` and not among them, those of `stages` DVC lacks)."""
    from dvc.repo import Repo
    with Repo(str(root)) as repo:
        graph = repo.index.graph              # edges point from a stage to its dependencies
        by_name = {s.addressing: s for s in graph.nodes}
        missing = [s for s in stages if s not in by_name]
        seen: set = set()
        todo = [by_name[s] for s in stages if s in by_name]
        while todo:
            for dep in graph.successors(todo.pop()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        names = {s.addressing for s in seen} - set(stages)
        return [s.addressing for s in graph.nodes if s.addressing in names], missing


# ------------------------------------------------------------------ running DVC

def dvc(*args: str) -> list[str]:
    """This environment's DVC (the stages' own commands find `python` on PATH)."""
    return [sys.executable, "-m", "dvc", *args]


def heal_rwlock(path: Path = RWLOCK) -> None:
    """A DVC process killed while it rewrote its lock table (.dvc/tmp/rwlock, written in place)
    leaves it unreadable, and every later `dvc repro` stops at it; its entries belonged to
    dead processes (a live one's would be readable), so an empty table replaces it."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return
    try:
        if isinstance(json.loads(text), dict):
            return
    except ValueError:
        pass
    print(f"fanout: {path} was left unreadable by a killed DVC process; emptying it",
          flush=True)
    tmp = path.with_name(f"{path.name}.fanout-{os.getpid()}")
    tmp.write_text("{}")
    os.replace(tmp, path)


def changed(stages: list[str]) -> list[str]:
    """Those of `stages` that `dvc status` reports changed (new, modified or missing)."""
    if not stages:
        return []
    r = subprocess.run(dvc("status", "--json", *stages), capture_output=True, text=True)
    if r.returncode:
        raise FanoutError(f"dvc status failed:\n{r.stdout}{r.stderr}")
    report = json.loads(r.stdout or "{}")
    return [s for s in stages if s in report]


def stream(cmd: list[str], no_train: bool) -> tuple[int, set[str]]:
    """Run a DVC command, its output passed through; the stages it ran. With `no_train`, a
    training that starts (a run the remote lacks) is stopped and reported."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         bufsize=1, process_group=0)
    ran: set[str] = set()
    try:
        for line in p.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            ran.update(RAN.findall(line))
            if no_train and any(s.startswith("train@") for s in ran):
                os.killpg(p.pid, signal.SIGTERM)
                p.wait()
                stage = next(s for s in ran if s.startswith("train@"))
                raise FanoutError(
                    f"{stage} started training: no run-cache entry for it was found on the DVC "
                    "remote (its task failed, or did not push). Stopped, since this step must "
                    "train nothing. Train it first (on a cluster: bash slurm/submit.sh again; "
                    "what the remote holds is restored, not retrained).")
    except BaseException:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
        p.wait()
        raise
    return p.wait(), ran


class Workers:
    """One `dvc repro --single-item` at a time per slot, fed from a queue of stages."""

    def __init__(self, slots: list[Slot], pull: bool, log_dir: Path):
        self.slots, self.pull, self.log_dir = slots, pull, log_dir
        self.running: dict[Slot, tuple[subprocess.Popen, str, float, Path]] = {}
        self.stopping = False

    def start(self, slot: Slot, stage: str) -> None:
        log = self.log_dir / f"{stage.replace('@', '-')}.log"
        cmd = dvc("--wait-for-lock", "repro", "--single-item", *(["--pull"] if self.pull
                                                                  else []), stage)
        with log.open("w") as out:
            # its own process group: a signal reaches DVC and the stage command it runs
            p = subprocess.Popen(cmd, env={**os.environ, **slot.env}, stdout=out,
                                 stderr=subprocess.STDOUT, process_group=0)
        if slot.cpus:
            os.sched_setaffinity(p.pid, slot.cpus)  # before DVC starts the stage: inherited
        self.running[slot] = (p, stage, time.perf_counter(), log)
        print(f"fanout: [{slot.name}] {stage} started (log: {log})", flush=True)

    def signal_all(self, sig: int) -> None:
        for p, *_ in self.running.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass

    def run(self, stages: list[str]) -> list[Result]:
        queue, results = deque(stages), []
        free = list(self.slots)
        while queue or self.running:
            while queue and free and not self.stopping:
                self.start(free.pop(0), queue.popleft())
            time.sleep(0.2)
            for slot, (p, stage, t0, log) in list(self.running.items()):
                if p.poll() is None:
                    continue
                del self.running[slot]
                free.append(slot)
                text = log.read_text(errors="replace")
                trained = f"Running stage '{stage}'" in text
                r = Result(stage, slot.name, p.returncode, time.perf_counter() - t0, trained,
                           log)
                results.append(r)
                what = "trained" if trained else "up to date / restored"
                print(f"fanout: [{slot.name}] {stage} {what if r.code == 0 else 'FAILED'} "
                      f"in {r.seconds:.0f}s", flush=True)
                if r.code:
                    self.stopping = True          # let the others finish; start no more
                    tail = text.splitlines()[-15:]
                    print("\n".join(f"    {line}" for line in tail), flush=True)
            if self.stopping and not self.running:
                break
        return results


# ------------------------------------------------------------------ main

def make_plan(args: argparse.Namespace) -> Plan:
    if not Path("dvc.yaml").is_file():
        raise FanoutError(f"no dvc.yaml in {Path.cwd()}: run this from the project's root")
    params = load_params(args.params)
    stages = run_stages(params, args.slice)
    shared, missing = dvc_graph(Path.cwd(), stages)
    if missing:
        raise FanoutError(f"dvc.yaml has no stage {missing[0]} (of {len(missing)}) that "
                          f"{args.params} implies; do dvc.yaml's train matrix and params.yaml "
                          "agree?")
    slots = build_slots(args, params.train.accelerator, params.train.devices)
    steps = set(args.steps.split(","))
    return Plan(shared if "shared" in steps else [],
                stages if "runs" in steps and not args.no_train else [],
                "final" in steps and args.slice is None, slots)


def execute(plan: Plan, args: argparse.Namespace) -> int:
    pull = ["--pull"] if args.pull else []
    t0 = time.perf_counter()
    heal_rwlock()
    if plan.shared:
        print(f"fanout: shared stages first: {' '.join(plan.shared)}", flush=True)
        code, _ = stream(dvc("repro", *pull, *plan.shared), args.no_train)
        if code:
            return code
    todo = changed(plan.runs)
    if plan.runs:
        print(f"fanout: {len(todo)} of {len(plan.runs)} trainings to run on {len(plan.slots)} "
              f"slot(s): " + ", ".join(map(describe, plan.slots)), flush=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    workers = Workers(plan.slots, args.pull, LOG_DIR)

    def stop(sig: int, _frame) -> None:
        workers.stopping = True
        workers.signal_all(signal.SIGINT if sig == signal.SIGINT else signal.SIGTERM)
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        results = workers.run(todo)
    except KeyboardInterrupt:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):   # a second one: at once
            signal.signal(sig, lambda *_: workers.signal_all(signal.SIGKILL))
        deadline = time.time() + 30
        while any(p.poll() is None for p, *_ in workers.running.values()) and \
                time.time() < deadline:
            time.sleep(0.2)
        workers.signal_all(signal.SIGKILL)
        print("fanout: stopped; run the same command again to train what is left (a killed "
              "training resumes after its last completed epoch)", flush=True)
        return 130
    failed = [r for r in results if r.code]
    trained = sum(r.trained for r in results if not r.code)
    if plan.runs:
        print(f"fanout: {trained} trained, {len(results) - trained - len(failed)} up to date or "
              f"restored, {len(failed)} failed, in {time.perf_counter() - t0:.0f}s", flush=True)
    if failed:
        print(f"fanout: failed: {', '.join(r.stage for r in failed)} (logs: {LOG_DIR}); run "
              "again to retry", flush=True)
        return 1
    if plan.final:
        code, _ = stream(dvc("repro", *pull), args.no_train)
        if code:
            return code
    print(f"fanout: done in {time.perf_counter() - t0:.0f}s", flush=True)
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m augvit.fanout", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--gpus", default="auto",
                    help="GPUs to use: auto (CUDA_VISIBLE_DEVICES, else all), a list such as "
                         "0,1,3, or none (train on the CPU)")
    ap.add_argument("--per-gpu", type=int, default=1,
                    help="trainings at a time on each GPU (each group of train.devices GPUs)")
    ap.add_argument("--cpu-slots", type=int,
                    help="train on the CPU, this many trainings at a time")
    ap.add_argument("--threads", type=int,
                    help="CPU threads per training (default: this process's cores / slots)")
    ap.add_argument("--slice", type=parse_slice, metavar="I/N",
                    help="only the I-th of N disjoint parts of the runs (0-based); no final step")
    ap.add_argument("--steps", default="shared,runs,final",
                    help="comma-separated, of shared,runs,final (default: all three)")
    ap.add_argument("--pull", action="store_true",
                    help="dvc repro --pull: restore from the DVC remote (run-cache) what it holds")
    ap.add_argument("--no-train", action="store_true",
                    help="fail rather than train: every training must be restored (gathering "
                         "a cluster's results); skips the runs step")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    for name in ("per_gpu", "cpu_slots", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser().error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not set(args.steps.split(",")) <= {"shared", "runs", "final"}:
        parser().error(f"--steps {args.steps!r}: a comma-separated list of shared,runs,final")
    try:
        plan = make_plan(args)
        if args.dry_run:
            print(f"shared: {' '.join(plan.shared) or '-'}")
            print(f"runs: {' '.join(plan.runs) or '-'}")
            print(f"final: {'dvc repro' if plan.final else '-'}")
            for s in plan.slots:
                cores = ",".join(map(str, s.cpus)) or "any"
                print(f"slot {s.name}: " + " ".join(f"{k}={v}" for k, v in s.env.items()) +
                      f" cores={cores}")
            sys.exit(0)
        sys.exit(execute(plan, args))
    except StageError as e:                 # params.yaml's problems, or the plan's
        print(f"fanout: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("fanout: stopped; run the same command again to go on", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
