"""A throwaway single-node SLURM cluster on this machine, for testing the job scripts for real.

Debian's packages (slurmctld, slurmd, slurm-client, munge; SLURM 22.05) as a new user would set
them up, in a temporary folder: a munge key and munged (run as the `munge` user, on its own
socket), a slurm.conf with one node of this machine's CPUs and `gpus` GPUs as generic resources
(GRES; gres.conf names stand-in device files, links to /dev/null, as no GPU is needed to
allocate one: SLURM sets each job's CUDA_VISIBLE_DEVICES to its share), `ProctrackType=proctrack/linuxproc`
and `TaskPlugin=task/none` (no cgroup.conf: 22.05 has no `CgroupPlugin=disabled`, and with that
line slurmd refuses to start), slurmctld and slurmd on free ports. Needs root. `stop()` ends
the jobs and every daemon it started, also after a failure.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "runuser")


def missing_requirements() -> str | None:
    """Why a cluster cannot start here, or None."""
    lacking = [d for d in DAEMONS if not shutil.which(d) and not Path(f"/usr/sbin/{d}").exists()]
    if lacking:
        return (f"SLURM is not installed ({', '.join(lacking)} missing); on Debian: apt-get "
                "install slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        return "starting SLURM's daemons needs root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "there is no `munge` user to run munged as (the munge package makes it)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class Cluster:
    def __init__(self, cpus: int = 2, gpus: int = 2):
        self.cpus, self.gpus = cpus, gpus
        # not under pytest's tmp folders: munged must reach its socket folder as `munge`
        self.dir = Path(tempfile.mkdtemp(prefix="augvit-slurm-"))
        self.dir.chmod(0o755)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.dir / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.started: list[Path] = []          # pid files of the daemons started

    # ------------------------------------------------------------ set-up
    def start(self) -> Cluster:
        try:
            self._munge()
            self._config()
            self._daemon(self.dir / "slurmctld.pid", sbin("slurmctld"), "-f", str(self.conf),
                         "-c")
            self._daemon(self.dir / "slurmd.pid", sbin("slurmd"), "-f", str(self.conf),
                         "-N", self.node)
            self._wait_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def _munge(self) -> None:
        m = self.dir / "munge"
        m.mkdir()
        shutil.chown(m, "munge", "munge")
        m.chmod(0o755)                 # munged wants its socket's folder open to everyone
        self.socket = m / "munge.socket"
        subprocess.run(["runuser", "-u", "munge", "--", sbin("mungekey"), "-c", "-k",
                        str(m / "munge.key")], check=True, capture_output=True, timeout=30)
        self._daemon(m / "munged.pid", "runuser", "-u", "munge", "--", sbin("munged"),
                     f"--socket={self.socket}", f"--key-file={m / 'munge.key'}",
                     f"--pid-file={m / 'munged.pid'}", f"--log-file={m / 'munged.log'}",
                     f"--seed-file={m / 'munged.seed'}")

    def _config(self) -> None:
        d = self.dir
        for sub in ("state", "spool", "log", "dev"):
            (d / sub).mkdir()
        for i in range(self.gpus):                   # stand-ins for /dev/nvidia<i>
            (d / "dev" / f"gpu{i}").symlink_to("/dev/null")
        gres = f"Gres=gpu:{self.gpus}" if self.gpus else ""
        (d / "gres.conf").write_text(
            f"AutoDetect=off\nName=gpu File={d / 'dev'}/gpu[0-{self.gpus - 1}]\n"
            if self.gpus else "")
        self.conf.write_text(f"""\
ClusterName=augvittest
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={self.socket}
CredType=cred/munge
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'log' / 'slurmctld.log'}
SlurmdLogFile={d / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
GresTypes=gpu
JobAcctGatherType=jobacct_gather/none
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} {gres} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _daemon(self, pidfile: Path, *cmd: str) -> None:
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stdout}{r.stderr}"
                               f"{self.logs()}")
        self.started.append(pidfile)
        t0 = time.time()
        while not pidfile.exists():
            if time.time() - t0 > 30:
                raise RuntimeError(f"{cmd[0]} wrote no {pidfile.name}{self.logs()}")
            time.sleep(0.1)

    def _wait_idle(self, timeout: float = 60) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            state = self.run("sinfo", "-h", "-o", "%T", check=False).strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"the node never became idle (sinfo: {state!r}){self.logs()}")

    # ------------------------------------------------------------ use
    def run(self, *cmd: str, check: bool = True, env: dict | None = None,
            cwd: Path | None = None) -> str:
        r = subprocess.run(cmd, env={**self.env, **(env or {})}, capture_output=True, text=True,
                           timeout=120, cwd=cwd)
        if check and r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r.stdout + (r.stderr if check else "")

    def job_states(self, job: str) -> dict[str, str]:
        """'<id>' or '<id>_<task>' -> state, for a job or every task of an array."""
        out = self.run("scontrol", "show", "job", "-o", job, check=False)
        states = {}
        for line in out.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if "JobId" not in fields:
                continue
            key = fields["JobId"]
            if fields.get("ArrayJobId") and fields.get("ArrayTaskId", "").isdigit():
                key = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
            states[key] = fields.get("JobState", "?")
        return states

    def logs(self) -> str:
        text = ""
        for f in sorted(self.dir.glob("**/*.log")):
            text += f"\n--- {f.name}\n" + "\n".join(f.read_text(errors="replace")
                                                     .splitlines()[-20:])
        return text

    # ------------------------------------------------------------ tear-down
    def stop(self) -> None:
        """Cancel every job, then end slurmd, slurmctld and munged (the ones started here)."""
        if any(p.name == "slurmctld.pid" for p in self.started):
            self.run("scancel", "--full", "--user", "root", check=False)
            t0 = time.time()
            while self.run("squeue", "-h", check=False).strip() and time.time() - t0 < 30:
                time.sleep(0.5)
        for pidfile in reversed(self.started):
            try:
                pid = int(pidfile.read_text().strip())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            t0 = time.time()
            while _alive(pid) and time.time() - t0 < 15:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.started.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:                                    # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
