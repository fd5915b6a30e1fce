"""A real 2-node Slurm cluster for the tests: slurm/cluster.sh, started once per session.

A cluster that is already up (`make slurm-up`) is used and left running; one the tests start
is stopped at the end, whatever happened. Each checkout has its own cluster (cluster.sh keys
its state directory to the checkout's path); while another checkout's runs, the Slurm tests
skip, saying whose. Jobs the tests submit are cancelled by id when a
test ends, and nothing else is ever signalled.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "slurm" / "cluster.sh"
BINARIES = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch", "sacct",
            "scontrol", "unshare")
OTHER_CLUSTER_RUNS = 4  # cluster.sh up: another checkout's cluster holds the node names
FINAL = re.compile(r"^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED|"
                   r"BOOT_FAIL|DEADLINE)")


@dataclass(frozen=True)
class Cluster:
    env: dict[str, str]  # for every subprocess: SLURM_CONF, MGFT_STATE_DIR, PATH

    def run(self, *cmd: str, check: bool = True, timeout: float = 60,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=cwd)
        if check:
            assert proc.returncode == 0, f"{cmd}: {proc.stderr[-3000:]}"
        return proc

    def mgft(self, *args: str, timeout: float = 120,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "mgft.cli", *args, check=False, timeout=timeout,
                        cwd=cwd)

    def sacct_state(self, job_id: str) -> tuple[str, int]:
        """The job's current state in accounting, and how many times it was requeued."""
        out = self.run("sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", "State").stdout
        rows = [r.strip() for r in out.splitlines() if r.strip()]  # "CANCELLED by 0"
        return (rows[-1] if rows else "UNKNOWN"), max(0, len(rows) - 1)

    def wait_final(self, job_id: str, timeout: float = 240) -> str:
        """Wait until the job ended for good (not merely requeued); its final state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queued = self.run("squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout
            if not queued.strip():
                state, _ = self.sacct_state(job_id)
                if FINAL.match(state):
                    return state
            time.sleep(1)
        raise AssertionError(f"job {job_id} still not finished after {timeout} s")

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"no {what} after {timeout} s"
            time.sleep(0.5)


def _skip_reason() -> str | None:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return (f"Slurm is not installed here ({', '.join(missing)} missing): run "
                "slurm/install-deps.sh as root (CI does)")
    if os.geteuid() != 0:
        return "the local Slurm cluster runs slurmd as root: run the tests as root (CI does)"
    return None


@contextmanager
def cluster(state_dir: Path) -> Iterator[Cluster]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    base = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    conf = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True, check=True,
                          env=base).stdout.split("=", 1)[1].strip()
    env = base | {"SLURM_CONF": conf, "MGFT_STATE_DIR": str(state_dir),
                  # jobs run the rendered script's python3 and torchrun from this venv
                  "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # status exits 3 when none of the daemons runs: only then is the whole cluster ours to
    # stop. A partly running one is completed and left running.
    status = subprocess.run([str(SCRIPT), "status"], capture_output=True, env=env).returncode
    ours = status == 3
    try:
        if status != 0:
            up = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True, env=env,
                                timeout=180)
            if up.returncode == OTHER_CLUSTER_RUNS:
                ours = False
                pytest.skip(f"slurm/cluster.sh up refused: {up.stderr.strip()}")
            assert up.returncode == 0, f"slurm/cluster.sh up failed:\n{up.stderr}"
        yield Cluster(env=env)
    finally:
        if ours:
            subprocess.run([str(SCRIPT), "down"], capture_output=True, env=env, timeout=180)
