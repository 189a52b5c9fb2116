"""A real single-node SLURM cluster in a temp dir: munged, slurmctld and slurmd with a generated slurm.conf.

The node is this machine with its real CPUs and memory (`slurmd -C`), one partition, JobRequeue=1, private
ports, sockets and state dirs, so /etc is never touched and two sessions can run side by side. Clients
(sbatch, srun, squeue, scontrol) find it through SLURM_CONF, which `env` sets.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PROGRAMS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "srun")
CLIENTS = ("squeue", "sinfo", "scontrol", "scancel")
FINISHED_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


def missing_binaries() -> list[str]:
    """SLURM/munge programs not on PATH (sbin included); empty when the cluster can be started."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [b for b in (*PROGRAMS, *CLIENTS) if shutil.which(b, path=path) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (apt-get install slurm-wlm munge)")
    return found


def node_line() -> str:
    """This machine as `slurmd -C` sees it: `CPUs=.. Boards=.. ... RealMemory=..` (without NodeName)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("NodeName="))
    return re.sub(r"^NodeName=\S+\s*", "", line).strip()


@dataclass
class LocalSlurmCluster:
    """Start with `start()`, stop with `stop()`; `env` is the environment for clients and jobs."""

    root: Path
    partition: str = "debug"
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def node(self) -> str:
        """The node is named after this host, so the job's node list resolves (MASTER_ADDR for DDP)."""
        return socket.gethostname().split(".")[0]

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ, SLURM_CONF=str(self.conf))
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin", "/sbin"])
        return env

    def write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "log", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "plugstack.conf").write_text("")
        host = self.node
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=pytest",
                    f"SlurmctldHost={host}(127.0.0.1)",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={r / 'munge' / 'munge.socket'}",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}",
                    f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                    f"SlurmdPidFile={r / 'slurmd.pid'}",
                    f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
                    f"PlugStackConfig={r / 'plugstack.conf'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "SchedulerType=sched/backfill",
                    "SwitchType=switch/none",
                    "MpiDefault=none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "ReturnToService=2",
                    "JobRequeue=1",
                    "MinJobAge=600",
                    "KillWait=10",
                    "InactiveLimit=0",
                    "SlurmdTimeout=300",
                    f"NodeName={host} NodeAddr=127.0.0.1 {node_line()} State=UNKNOWN",
                    f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _start_munge(self) -> None:
        m = self.root / "munge"
        key = m / "munge.key"
        subprocess.run([_which("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        key.chmod(0o400)
        subprocess.run(
            [
                _which("munged"),
                f"--socket={m / 'munge.socket'}",
                f"--key-file={key}",
                f"--pid-file={m / 'munged.pid'}",
                f"--log-file={m / 'munged.log'}",
                f"--seed-file={m / 'munged.seed'}",
                "--force",
            ],
            check=True,
            capture_output=True,
        )

    def start(self, timeout: float = 60.0) -> None:
        """Writes the config, starts the daemons and waits until the node takes jobs."""
        self.write_config()
        self._start_munge()
        log = open(self.root / "log" / "daemons.out", "ab")  # noqa: SIM115 - closed with the processes
        self.procs.append(
            subprocess.Popen(
                [_which("slurmctld"), "-D", "-c", "-f", str(self.conf)], stdout=log, stderr=log, env=self.env
            )
        )
        time.sleep(1.0)
        self.procs.append(
            subprocess.Popen(
                [_which("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)],
                stdout=log,
                stderr=log,
                env=self.env,
            )
        )
        self.wait_node_idle(timeout)

    def wait_node_idle(self, timeout: float) -> None:
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(
                        f"a SLURM daemon exited ({p.args[0]}: {p.returncode}); see {self.root / 'log'}"
                    )
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env
            )
            state = out.stdout.strip()
            if state.startswith("idle"):
                return
            time.sleep(0.5)
        raise TimeoutError(
            f"SLURM node not idle after {timeout}s (state {state!r}); logs in {self.root / 'log'}"
        )

    def stop(self) -> None:
        """Cancels every job, then stops slurmd, slurmctld and munged (only the processes this object started)."""
        if self.procs and all(p.poll() is None for p in self.procs):
            self.run("scancel", "--full", f"--partition={self.partition}", check=False)
            deadline = time.time() + 30
            while time.time() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.5)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
        pid_file = self.root / "munge" / "munged.pid"
        if pid_file.is_file():
            try:
                os.kill(int(pid_file.read_text().strip()), 15)
            except (ProcessLookupError, ValueError):
                pass

    # -- client helpers ---------------------------------------------------------------------------------
    def run(self, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        env = dict(self.env, **kwargs.pop("env", {}))
        proc = subprocess.run(list(args), capture_output=True, text=True, env=env, **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def sbatch(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
        """Submits with `sbatch --parsable`; returns the job id (for an array, the array's job id)."""
        out = self.run("sbatch", "--parsable", *args, env=env or {}, cwd=cwd).stdout.strip()
        return out.split(";")[0]

    def job_fields(self, job: str) -> list[dict[str, str]]:
        """`scontrol show job` of a job (one dict per array task), [] once SLURM forgot it."""
        proc = self.run("scontrol", "show", "job", "-o", job, check=False)
        if proc.returncode != 0:
            return []
        records = []
        for line in proc.stdout.strip().splitlines():
            fields = {}
            for token in line.split():
                if "=" in token:
                    k, v = token.split("=", 1)
                    fields.setdefault(k, v)
            records.append(fields)
        return records

    def states(self, job: str) -> list[str]:
        return [r.get("JobState", "?") for r in self.job_fields(job)]

    def wait_finished(self, job: str, timeout: float) -> list[dict[str, str]]:
        """Waits until every task of `job` is in a final state; returns their records."""
        deadline = time.time() + timeout
        records: list[dict[str, str]] = []
        while time.time() < deadline:
            records = self.job_fields(job)
            if records and all(r.get("JobState") in FINISHED_STATES for r in records):
                return records
            time.sleep(1.0)
        raise TimeoutError(
            f"job {job} not finished after {timeout}s: {[r.get('JobState') for r in records]}; "
            f"slurmctld log: {self.root / 'log' / 'slurmctld.log'}"
        )
