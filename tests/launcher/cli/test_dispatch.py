"""`mgft status|logs|cancel|list`: which backend answers, and what they say when it cannot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mgft.cli import dispatch as manage
from mgft.spec.job import Backend


@pytest.mark.parametrize("job,backend,expected", [
    ("1234", None, Backend.SLURM), ("1234_7", None, Backend.SLURM),
    ("mgft-llama-1a2b", None, Backend.K8S), ("1234", "k8s", Backend.K8S),
])
def test_backend_from_the_job_id_or_the_flag(job: str, backend: str | None,
                                             expected: Backend) -> None:
    assert manage.backend_for(job, backend) is expected


def mgft(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mgft.cli", *args], capture_output=True,
                          text=True, env=env, timeout=30)


@pytest.mark.parametrize("args", [["status", "12"], ["logs", "12", "-f"], ["cancel", "12"],
                                  ["list"]])
def test_no_slurm_here_is_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    # A PATH with this Python but none of Slurm's commands.
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    env = os.environ | {"PATH": str(bare), "MGFT_STATE_DIR": str(tmp_path / "state")}
    (tmp_path / "state" / "slurm").mkdir(parents=True)
    (tmp_path / "state" / "slurm" / "12.json").write_text(
        '{"job_id": "12", "name": "x", "folder": "/f", "output": "/o", "nodes": 1,'
        ' "submitted": "now"}')
    result = mgft(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("mgft: error: Slurm is not reachable: ")
    assert "is not on PATH" in result.stderr and result.stderr.count("\n") == 1


def test_a_missing_slurm_conf_is_named_at_once(tmp_path: Path) -> None:
    env = os.environ | {"SLURM_CONF": str(tmp_path / "slurm.conf")}
    if subprocess.run(["sh", "-c", "command -v squeue"], capture_output=True).returncode:
        pytest.skip("squeue not installed: the PATH case above covers this machine")
    result = mgft("status", "12", env=env)
    assert result.returncode == 2
    assert f"SLURM_CONF={tmp_path / 'slurm.conf'} does not exist" in result.stderr


@pytest.mark.parametrize("args,needle", [
    (["logs", "7", "--backend", "local"], "mgft logs for local jobs"),
    (["status", "nope", "--backend", "slurm"], "not a Slurm job id"),
])
def test_jobs_no_backend_can_answer(args: list[str], needle: str) -> None:
    result = mgft(*args, env=dict(os.environ))
    assert result.returncode == 2 and needle in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_job_commands_load_nothing_heavy() -> None:
    code = ("import sys, mgft.cli.dispatch, mgft.backends.slurm.submit, mgft.node.slurm, "
            "mgft.node.slurm_task; "
            "print(sorted(m for m in ('submitit', 'torch', 'transformers', 'numpy') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_cancel_help_says_how_long_every_backend_waits() -> None:
    """`mgft cancel` waits until the job has stopped, and no longer than the help says: Slurm
    until it is no longer active, k8s until its pods are gone (it used to return at once)."""
    from click.testing import CliRunner
    from mgft.backends.k8s import manage as k8s_manage
    from mgft.backends.slurm import submit as slurm
    from mgft.cli.main import main

    text = " ".join(CliRunner().invoke(main, ["cancel", "--help"]).stdout.split())
    assert slurm.CANCEL_WAIT_S == k8s_manage.CANCEL_WAIT_S
    assert f"wait until it has, at most {k8s_manage.CANCEL_WAIT_S} s" in text
    assert "k8s: delete the job, then until its pods are gone" in text
