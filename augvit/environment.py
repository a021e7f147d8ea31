"""Where a run ran: software versions, the project's commit, the device (cpu, cuda or mps) and
its precision.

Results differ across CPUs (floating-point order acts like another seed), so a study that mixes
runs from several machines is no bit-for-bit replicate: every run records its environment and
the compare stage lists them (augvit/report.py). Kept out of the metrics files.
"""
from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

PACKAGES = ("torch", "lightning", "transformers", "torchvision")
# The ISA features that change which kernels PyTorch runs on a CPU (and so its rounding).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "fma", "asimd", "sve")
ROOT = Path(__file__).resolve().parents[1]


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def project_commit() -> str:
    """The git commit of the code, '+changes' when the work tree differs; 'unknown' outside git."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "augvit", "stages")
        return commit + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_description() -> dict:
    """The CPU's model name and the ISA flags of CPU_FLAGS it has (Linux: /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": sorted(f for f in CPU_FLAGS if f in flags)}


def describe(device: torch.device, precision: str) -> dict:
    """This process's environment, for a run's record."""
    env = {"python": platform.python_version(), "platform": platform.platform(terse=True),
           **{name: _version(name) for name in PACKAGES}, "augvit": project_commit(),
           "device": device.type, "precision": precision, "threads": torch.get_num_threads(),
           **cpu_description()}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return env


def machine_key(env: dict) -> tuple:
    """What makes two runs' arithmetic comparable: device and the numerical software."""
    return tuple(env.get(k) for k in ("device", "cpu", "gpu", "cuda", "precision", "threads",
                                      "torch", "transformers"))


def plain_environment(env: object) -> dict:
    """A recorded environment as read from a model file (which may come from a remote): only
    short strings and lists of them are kept; anything else is dropped."""
    if not isinstance(env, dict):
        return {}
    out: dict = {}
    for key, value in list(env.items())[:32]:
        if not isinstance(key, str) or len(key) > 40:
            continue
        if isinstance(value, str) and len(value) <= 200:
            out[key] = value
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 16:
            out[key] = value
        elif isinstance(value, list) and all(isinstance(v, str) and len(v) <= 40
                                             for v in value[:32]):
            out[key] = value[:32]
    return out
