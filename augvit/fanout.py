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
training resuming after its last completed epoch. Run again when done, it does nothing. Every
DVC command runs in its own process group under a small guard process that ends the group
when the fan-out dies in any way (even SIGKILL: the guard sees its stdin pipe close), so no
training is left running without it, on Linux, macOS and Windows alike.
`--push` sends each training to the DVC remote (`dvc push --run-cache <stage>`) as soon as it
finishes; `--keep-going` starts the remaining trainings after one fails.
`--slice I/N` runs the I-th of N disjoint parts of the runs (a SLURM array task, slurm/);
`--pull` restores what the DVC remote's run-cache already holds instead of training it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from augvit.io import StageError
from augvit.layout import runs
from augvit.params import Params, load_params

LOG_DIR = Path(".dvc/tmp/fanout")       # one log per training; DVC and git ignore .dvc/tmp
RWLOCK = Path(".dvc/tmp/rwlock")         # DVC's table of the paths its processes read/write
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
POSIX = os.name == "posix"
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK")
                     if hasattr(signal, n))
GRACE_S = 10                             # a stopped training's time to end before SIGKILL
# Lines the training stage itself prints (augvit/training.py), not DVC's: what a worker did.
STARTED = re.compile(r"^train: (epoch \d+/\d+|resuming )", re.M)
TRAINED = re.compile(r"^train: \S+ done in ", re.M)
RESUMED = re.compile(r"^train: resuming \S+ after epoch (\d+) of (\d+)", re.M)


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
    return [str(i) for i in range(cuda_devices())]


def cuda_devices() -> int:
    """How many GPUs torch can use here (0 without CUDA)."""
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


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
    idle = gpus[len(groups) * devices_per_run:]
    if idle:
        warnings.warn(f"GPU(s) {','.join(idle)} will sit idle: train.devices is "
                      f"{devices_per_run} and {len(gpus)} GPUs are visible; list a multiple "
                      f"of {devices_per_run} with --gpus, or change train.devices.",
                      stacklevel=2)
    n = len(groups) * per_gpu
    t = threads or max(1, cpus // n)
    return [Slot(f"gpu{','.join(g)}#{k}", {"CUDA_VISIBLE_DEVICES": ",".join(g), **thread_env(t)})
            for k in range(per_gpu) for g in groups]


def cpu_slots(n: int, threads: int | None, cpus: list[int]) -> list[Slot]:
    """`n` slots of `threads` threads each, pinned to their own cores when there are enough
    and the OS can pin (os.sched_setaffinity: Linux; not macOS or Windows, where the slots
    share every core). CUDA_VISIBLE_DEVICES is emptied, so `train.accelerator: auto` picks
    the CPU."""
    t = threads or max(1, len(cpus) // n)
    pinned = n * t <= len(cpus) and hasattr(os, "sched_setaffinity")
    return [Slot(f"cpu{i}", {"CUDA_VISIBLE_DEVICES": "", **thread_env(t)},
                 tuple(cpus[i * t:(i + 1) * t]) if pinned else ())
            for i in range(n)]


def build_slots(args: argparse.Namespace, accelerator: str, devices_per_run: int) -> list[Slot]:
    cpus = usable_cpus()
    gpu_asked = args.gpus not in ("auto", "none") or args.per_gpu is not None
    if gpu_asked and args.cpu_slots is not None:
        raise FanoutError("--cpu-slots trains on the CPU: leave out --gpus/--per-gpu with it")
    if args.cpu_slots is None and args.gpus != "none" and accelerator != "cpu":
        usable = cuda_devices()
        if gpu_asked and not usable:
            raise FanoutError(f"--gpus {args.gpus} / --per-gpu {args.per_gpu}: torch finds "
                              "no usable GPU here (no CUDA device, or a CPU-only torch); "
                              "use --cpu-slots N to train on the CPU, or run on a GPU node.")
        gpus = (visible_gpus() if usable else []) if args.gpus == "auto" \
            else args.gpus.split(",")
        if gpus:
            return gpu_slots(gpus, args.per_gpu or 1, devices_per_run, len(cpus),
                             args.threads)
        if accelerator == "gpu":
            raise FanoutError("train.accelerator is gpu but no GPU is visible; set it to auto "
                              "or cpu, or run on a GPU node.")
    elif gpu_asked and accelerator == "cpu":
        raise FanoutError(f"--gpus/--per-gpu given but params.yaml's train.accelerator is cpu: "
                          "set it to auto or gpu, or use --cpu-slots N.")
    if not hasattr(os, "sched_setaffinity") and (args.cpu_slots or 1) > 1:
        print("fanout: note: this OS cannot pin a process to cores (no "
              "os.sched_setaffinity); the CPU slots share every core", flush=True)
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
    """A DVC process killed while it rewrote its lock table leaves it unreadable, and every
    later `dvc repro` stops at it; its entries belonged to dead processes (a live one's would
    be readable), so an empty table replaces it.

    DVC has no public command for this; what is relied on (DVC 3, dvc/rwlock.py, tested in
    tests/test_fanout.py): the table is `.dvc/tmp/rwlock`, JSON rewritten in place under
    `.dvc/tmp/rwlock.lock`; a cut one makes DVC fail with "Unable to read RWLock-file";
    `{}` is an empty table that DVC accepts."""
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


def spawn(cmd: list[str], **kwargs) -> subprocess.Popen:
    """`cmd` under a guard (`--guard`), both in a new process group of their own, so that a
    signal to the group reaches DVC and the stage command it runs. The guard's stdin is a
    pipe only this process holds: when it ends, however it ends, the guard ends the group."""
    group = {"process_group": 0} if POSIX else \
        {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return subprocess.Popen([sys.executable, "-m", "augvit.fanout", "--guard", *cmd],
                            stdin=subprocess.PIPE, **group, **kwargs)


def stop_group(p: subprocess.Popen, force: bool = False) -> None:
    """Ask p's process group to stop (POSIX: SIGTERM and SIGCONT, as SLURM does; Windows:
    Ctrl-Break), or with `force` end it at once (SIGKILL; Windows: taskkill /T /F)."""
    if p.poll() is not None:
        return
    try:
        if force:
            kill_tree(p.pid)
        elif POSIX:
            os.killpg(p.pid, signal.SIGTERM)
            os.killpg(p.pid, signal.SIGCONT)        # a stopped process must see it too
        else:
            p.send_signal(signal.CTRL_BREAK_EVENT)
    except OSError:                                 # gone meanwhile
        pass


def kill_tree(pid: int) -> None:
    """End a process group (POSIX: its leader's pid) or a process tree (Windows) at once."""
    if POSIX:
        os.killpg(pid, signal.SIGKILL)
    else:
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(pid)], capture_output=True)


def guard(cmd: list[str]) -> int:
    """Run `cmd` in this process group; end the group when stdin closes (the fan-out is gone).
    Outlives its command on the stop signals (a handler that does nothing: unlike SIG_IGN,
    the command does not inherit it), so it reports the command's exit code."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: None)
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)

    def watch() -> None:
        sys.stdin.buffer.read()                    # returns at EOF: the fan-out has ended
        if child.poll() is None:
            print("fanout: the fan-out has ended; stopping its training", flush=True)
            if POSIX:
                os.killpg(0, signal.SIGTERM)
            else:
                child.send_signal(signal.CTRL_BREAK_EVENT)
            try:
                child.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            kill_tree(os.getpgid(0) if POSIX else child.pid)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    code = child.wait()
    return 128 - code if code < 0 else code          # killed by a signal: 128 + its number


def stream(cmd: list[str], no_train: bool) -> int:
    """Run a DVC command, its output passed through. With `no_train`, a training that starts
    (a run the remote lacks: the training stage prints its first epoch) is stopped and named."""
    p = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        for line in p.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if no_train and STARTED.match(line):
                stop_group(p)
                p.wait()
                raise FanoutError(
                    f"a training started ({line.strip()}): no run-cache entry for it was "
                    "found on the DVC remote (its task failed, or did not push). Stopped, "
                    "since this step must train nothing. Train it first (on a cluster: bash "
                    "slurm/submit.sh again; what the remote holds is restored, not retrained).")
    except BaseException:
        stop_group(p)
        p.wait()
        raise
    return p.wait()


class Progress:
    """Runs done / running / left and the time left from the measured time per training:
    a bar on a terminal, a plain line per event otherwise (CI logs)."""

    def __init__(self, total: int, slots: int):
        from tqdm import tqdm
        self.total, self.slots, self.done, self.seconds = total, slots, 0, []
        self.bar = tqdm(total=total, unit="run", dynamic_ncols=True, file=sys.stdout,
                        disable=not sys.stdout.isatty() or not total)

    def say(self, text: str) -> None:
        if self.bar.disable:
            print(text, flush=True)
        else:
            self.bar.write(text)

    def update(self, running: int, trained_s: float | None) -> None:
        self.done += 1
        if trained_s is not None:
            self.seconds.append(trained_s)
        left = self.total - self.done - running
        eta = ""
        if self.seconds:
            mean = sum(self.seconds) / len(self.seconds)
            rounds = math.ceil((left + running) / self.slots)
            eta = f", about {rounds * mean / 60:.1f} min left ({mean:.0f}s per training)"
        text = f"{self.done} done, {running} running, {left} left{eta}"
        if self.bar.disable:
            print(f"fanout: progress: {text}", flush=True)
        else:
            self.bar.update(1)
            self.bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        self.bar.close()


class Workers:
    """One `dvc repro --single-item` at a time per slot, fed from a queue of stages."""

    def __init__(self, slots: list[Slot], args: argparse.Namespace, log_dir: Path):
        self.slots, self.args, self.log_dir = slots, args, log_dir
        self.running: dict[Slot, tuple[subprocess.Popen, str, float, Path]] = {}
        self.stopping = False
        self.progress: Progress | None = None

    def start(self, slot: Slot, stage: str) -> None:
        log = self.log_dir / f"{stage.replace('@', '-')}.log"
        cmd = dvc("--wait-for-lock", "repro", "--single-item",
                  *(["--pull"] if self.args.pull else []), stage)
        with log.open("w") as out:
            p = spawn(cmd, env={**os.environ, **slot.env}, stdout=out, stderr=subprocess.STDOUT)
        if slot.cpus:
            os.sched_setaffinity(p.pid, slot.cpus)  # before DVC starts the stage: inherited
        self.running[slot] = (p, stage, time.perf_counter(), log)
        self.progress.say(f"fanout: [{slot.name}] {stage} started (log: {log})")

    def stop_all(self, force: bool = False) -> None:
        for p, *_ in self.running.values():
            stop_group(p, force)

    def push(self, stage: str) -> str | None:
        """The stage's outputs and the run-cache to the remote; None, or why it failed."""
        r = subprocess.run(dvc("--wait-for-lock", "push", "--run-cache", stage),
                           capture_output=True, text=True)
        if r.returncode:
            return (r.stdout + r.stderr).strip()[-1500:]
        self.progress.say(f"fanout: {stage} pushed to the DVC remote (outputs and run-cache)")
        return None

    def finish(self, slot: Slot, p: subprocess.Popen, stage: str, t0: float,
               log: Path) -> Result:
        text = log.read_text(errors="replace")
        trained = bool(TRAINED.search(text))
        r = Result(stage, slot.name, p.returncode, time.perf_counter() - t0, trained, log)
        resumed = RESUMED.search(text)
        what = "trained" if trained else "up to date / restored"
        if trained and resumed:
            what += f" (resumed after epoch {resumed[1]} of {resumed[2]})"
        self.progress.say(f"fanout: [{slot.name}] {stage} {what if r.code == 0 else 'FAILED'} "
                          f"in {r.seconds:.0f}s")
        if r.code:
            tail = text.splitlines()[-15:]
            self.progress.say("\n".join(f"    {line}" for line in tail))
        elif trained and self.args.push:
            why = self.push(stage)
            if why:
                r.code = 1
                self.progress.say(f"fanout: {stage} trained but NOT pushed to the DVC remote "
                                  f"(it stays in this workspace's cache):\n{why}")
        self.progress.update(len(self.running), r.seconds if trained else None)
        return r

    def run(self, stages: list[str]) -> list[Result]:
        queue, results = deque(stages), []
        free = list(self.slots)
        self.progress = Progress(len(stages), len(self.slots))
        try:
            while queue or self.running:
                while queue and free and not self.stopping:
                    self.start(free.pop(0), queue.popleft())
                time.sleep(0.2)
                for slot, (p, stage, t0, log) in list(self.running.items()):
                    if p.poll() is None:
                        continue
                    del self.running[slot]
                    free.append(slot)
                    results.append(self.finish(slot, p, stage, t0, log))
                    if results[-1].code and not self.args.keep_going:
                        self.stopping = True      # let the others finish; start no more
                if self.stopping and not self.running:
                    break
        finally:
            self.progress.close()
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
        code = stream(dvc("repro", *pull, *plan.shared), args.no_train)
        if code:
            return code
    todo = changed(plan.runs)
    if plan.runs:
        print(f"fanout: {len(todo)} of {len(plan.runs)} trainings to run on {len(plan.slots)} "
              f"slot(s): " + ", ".join(map(describe, plan.slots)), flush=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    workers = Workers(plan.slots, args, LOG_DIR)

    def stop(_sig: int, _frame) -> None:
        workers.stopping = True
        workers.stop_all()
        raise KeyboardInterrupt

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    try:
        results = workers.run(todo)
    except KeyboardInterrupt:
        for sig in STOP_SIGNALS:                                # a second one: at once
            signal.signal(sig, lambda *_: workers.stop_all(force=True))
        deadline = time.time() + GRACE_S
        while any(p.poll() is None for p, *_ in workers.running.values()) and \
                time.time() < deadline:
            time.sleep(0.2)
        workers.stop_all(force=True)
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
        code = stream(dvc("repro", *pull), args.no_train)
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
    ap.add_argument("--per-gpu", type=int,
                    help="trainings at a time on each GPU (each group of train.devices GPUs; default 1)")
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
    ap.add_argument("--push", action="store_true",
                    help="push each training to the DVC remote (dvc push --run-cache "
                         "<stage>) as soon as it finishes")
    ap.add_argument("--keep-going", action="store_true",
                    help="after a failed training, start the remaining ones (the command "
                         "still fails, naming it)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    return ap


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--guard"]:                 # the guard of one DVC command (spawn)
        code = guard(argv[1:])
        sys.stdout.flush()
        os._exit(code)       # not sys.exit: the watching thread still blocks on stdin
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
