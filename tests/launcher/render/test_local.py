from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from mgft.contract.process import trainer_argv
from mgft.render.local import local_command, render_local

from tests.launcher.render import cases
from tests.launcher.render.stubs import run_recorded

GOLDEN = Path(__file__).parent / "golden"
CASES = cases.local()


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, golden) -> None:
    golden(GOLDEN / f"local-{case}.txt", render_local(CASES[case]))


def test_rendered_line_is_the_command_that_runs(tmp_path: Path) -> None:
    spec = CASES["cpu-2"]
    command = local_command(spec)
    argv, env = run_recorded(render_local(spec), tmp_path)
    assert argv == command.argv[1:]
    assert {k: env[k] for k in command.env} == command.env


def test_cpu_run_uses_two_processes_gloo_and_keeps_every_rank_log() -> None:
    command = local_command(CASES["cpu-2"])
    assert command.argv[0] == "torchrun"
    assert "--nproc-per-node=2" in command.argv and "--standalone" in command.argv
    assert f"--log-dir={command.log_dir}" in command.argv
    assert command.log_dir == "runs/demo/logs"
    assert command.env["MGFT_DEVICE"] == "cpu"
    assert command.argv[-len(trainer_argv(CASES["cpu-2"])):] == trainer_argv(CASES["cpu-2"])
    assert "--max-steps=20" in shlex.split(render_local(CASES["cpu-2"]))


def test_gpu_run_is_one_process_per_gpu() -> None:
    command = local_command(CASES["gpu-4"])
    assert "--nproc-per-node=4" in command.argv
    assert command.env["MGFT_DEVICE"] == "cuda"


def test_max_restarts_reaches_torchrun_only_when_asked() -> None:
    assert not any(a.startswith("--max-restarts") for a in local_command(CASES["cpu-2"]).argv)
    restarting = cases.spec(**{"resources.gpus": 0, "max_restarts": 3})
    argv = local_command(restarting).argv
    assert argv[argv.index("--max-restarts=3") + 1:].count("--max-restarts=3") == 0
    assert argv.index("--max-restarts=3") < argv.index("-m")  # torchrun's flag, not the trainer's
