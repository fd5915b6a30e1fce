"""The CLI side of issue 6: --fabric/--nccl/--debug-dist/--gpu-ids flags, `mgft gpus`,
`mgft nccl explain` and `mgft doctor`, run as a user runs them (a subprocess) where they can
run here, and in-process with an injected GPU inventory where they need GPUs."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mgft.cli.main import main
from mgft.hw import nvml

from tests.launcher.hw.test_gpus import BUSY2

JOB = ["--model", "/models/llama", "--dataset", "/data/train.jsonl"]


def mgft(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "mgft.cli", *args], capture_output=True,
                          text=True, timeout=300, env=None if env is None else os.environ | env)


@pytest.fixture
def local_job(tmp_path: Path) -> list[str]:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    # A weights file by name: submit's instant checks look for one before the GPU choice.
    (tmp_path / "model" / "model.safetensors").write_bytes(b"")
    (tmp_path / "d.jsonl").write_text("{}\n")
    return ["--backend", "local", "--model", str(tmp_path / "model"), "--dataset",
            str(tmp_path / "d.jsonl"), "--output", str(tmp_path / "out")]


def test_switches_take_no_value_and_land_in_the_job() -> None:
    result = mgft("render", "--backend", "slurm", "--gpus", "8", "--nodes", "2", *JOB,
                  "--fabric", "infiniband", "--debug-dist", "--preflight",
                  "--nccl", "NCCL_IB_HCA==mlx5_0,mlx5_1", "--dist-timeout", "300")
    assert result.returncode == 0, result.stderr
    exports = dict(shlex.split(line)[1].split("=", 1) for line in result.stdout.splitlines()
                   if line.startswith("export "))
    assert exports["MGFT_FABRIC"] == "infiniband" and exports["NCCL_IB_DISABLE"] == "0"
    assert exports["NCCL_DEBUG"] == "INFO" and exports["MGFT_PREFLIGHT"] == "1"
    assert exports["NCCL_IB_HCA"] == "=mlx5_0,mlx5_1" and exports["MGFT_DIST_TIMEOUT"] == "300"


def test_unknown_nccl_key_is_a_warning_not_an_error() -> None:
    result = mgft("render", "--backend", "slurm", *JOB, "--nccl", "NCCL_SOCKET_IFACE=eth0")
    assert result.returncode == 0
    assert result.stderr == ("mgft: warning: --nccl NCCL_SOCKET_IFACE: not a known NCCL variable "
                             "(did you mean NCCL_SOCKET_IFNAME?); passed through as given\n")
    assert "export NCCL_SOCKET_IFACE=eth0" in result.stdout


@pytest.mark.parametrize("args,needle", [
    (["--nccl", "WANDB_MODE=offline"], "--nccl WANDB_MODE offline: not an NCCL"),
    (["--nccl", "NCCL_DEBUG"], "--nccl NCCL_DEBUG: is not KEY=VALUE"),
    (["--fabric", "myrinet"], "--fabric myrinet: not one of the choices"),
    (["--gpu-ids", "0,2"], "--gpu-ids 0,2: --backend slurm lets the scheduler place the job"),
    (["--exclusive"], "--exclusive True: --backend slurm lets the scheduler decide"),
    (["--dist-timeout", "5"], "--dist-timeout 5"),
])
def test_bad_dist_flags_are_one_line_and_exit_2(args: list[str], needle: str) -> None:
    result = mgft("render", "--backend", "slurm", *JOB, *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("mgft: error: ") and needle in result.stderr
    assert result.stderr.count("\n") == 1


def test_gpu_ids_set_the_count_and_must_agree_with_gpus(local_job: list[str]) -> None:
    from mgft.spec.build import build_spec, merge

    base = {"train.model": "m", "train.dataset": "d"}
    assert build_spec(merge({}, base | {"resources.gpu_ids": "0,2"}, [])).resources.gpus == 2
    result = mgft("render", *local_job, "--gpu-ids", "0,2", "--gpus", "4")
    assert result.returncode == 2
    assert "--gpu-ids 0,2: names 2 GPUs and --gpus is 4; drop --gpus, or set it to 2" in \
        result.stderr


def test_render_local_shows_the_gpus_submit_would_choose(monkeypatch: pytest.MonkeyPatch,
                                                         local_job: list[str]) -> None:
    monkeypatch.setattr(nvml, "inventory", lambda: BUSY2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    result = CliRunner().invoke(main, ["render", *local_job, "--gpus", "2"])
    assert result.exit_code == 0, result.output
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID CUDA_VISIBLE_DEVICES=2,3 torchrun" in result.output
    single = CliRunner().invoke(main, ["render", *local_job, "--gpus", "1"])
    assert "CUDA_VISIBLE_DEVICES=2 torchrun" in single.output


def test_busy_machine_fails_submit_before_anything_starts(monkeypatch: pytest.MonkeyPatch,
                                                          local_job: list[str]) -> None:
    monkeypatch.setattr(nvml, "inventory", lambda: BUSY2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    result = CliRunner().invoke(main, ["submit", *local_job, "--gpus", "3"])
    assert result.exit_code == 2
    assert result.output.startswith("mgft: error: --gpus 3: only 2 of 4 GPUs are free")
    assert not Path(local_job[-1]).exists(), "no run was started"


def test_on_this_cpu_machine_render_notes_and_submit_refuses(local_job: list[str]) -> None:
    rendered = mgft("render", *local_job, "--gpus", "2")
    assert rendered.returncode == 0 and "CUDA_VISIBLE_DEVICES" not in rendered.stdout
    assert "mgft: note: no NVIDIA GPU can be seen here" in rendered.stderr
    submitted = mgft("submit", *local_job, "--gpus", "2")
    assert submitted.returncode == 2
    assert submitted.stderr.startswith("mgft: error: --gpus 2: no NVIDIA GPU can be seen here")
    assert "Traceback" not in submitted.stderr


def test_submit_refuses_to_turn_nvls_back_on(local_job: list[str]) -> None:
    result = mgft("submit", *local_job, "--gpus", "0", "--nccl", "NCCL_NVLS_ENABLE=1",
                  env={"NCCL_NVLS_ENABLE": "0"})
    assert result.returncode == 2
    assert "this environment sets NCCL_NVLS_ENABLE=0" in result.stderr


def test_gpus_command_here_and_with_an_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    here = mgft("gpus")
    assert here.returncode == 0 and here.stdout.startswith("no NVIDIA GPU here")
    assert mgft("gpus", "--gpus", "2").returncode == 2
    monkeypatch.setattr(nvml, "inventory", lambda: BUSY2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2,3")
    result = CliRunner().invoke(main, ["gpus", "--gpus", "2"])
    assert result.exit_code == 0, result.output
    assert "within CUDA_VISIBLE_DEVICES=1,2,3" in result.output
    assert "CUDA_VISIBLE_DEVICES=2,3" in result.output and "passed over busy 1" in result.output


def test_nccl_explain_json_names_every_source() -> None:
    result = mgft("nccl", "explain", "--backend", "slurm", "--gpus", "8", "--nodes", "2",
                  "--fabric", "ethernet",
                  "--nccl", "NCCL_SOCKET_NTHREADS=8", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["NCCL_SOCKET_NTHREADS"]["value"] == "8"
    assert rows["NCCL_SOCKET_NTHREADS"]["source"] == "--nccl"
    assert rows["NCCL_IB_DISABLE"]["source"] == "--fabric ethernet"
    assert rows["NCCL_SOCKET_IFNAME"]["value"] == "at start"
    assert all(r["why"] for r in rows.values())


def test_nccl_explain_table_previews_auto_on_this_machine() -> None:
    result = mgft("nccl", "explain", "--gpus", "4")
    assert result.returncode == 0, result.stderr
    assert "MGFT_FABRIC" in result.stdout and "TORCH_NCCL_ASYNC_ERROR_HANDLING" in result.stdout
    assert "auto resolves to NCCL's defaults" in " ".join(result.stdout.split())


def test_doctor_on_this_cpu_machine_says_there_are_no_gpus(tmp_path: Path) -> None:
    out = tmp_path / "doctor.json"
    result = mgft("doctor", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {c["name"]: c for c in json.loads(out.read_text())["checks"]}
    assert checks["gpus"]["status"] == "warn" and "no GPUs visible" in checks["gpus"]["detail"]
    assert checks["driver"]["status"] == "warn"
    assert checks["torch"]["status"] == "pass" and "CPU-only" in checks["torch"]["detail"]
    assert set(checks) == {"driver", "torch", "nccl", "gpus", "shm", "ulimits", "nccl env",
                           "network", "rendezvous", "kernels"}
    assert checks["kernels"]["status"] == "pass"  # nothing falls back where no GPU runs
    assert "no GPUs visible" in result.stdout


def test_doctor_fails_on_an_unreachable_rendezvous_and_a_bad_interface() -> None:
    result = mgft("doctor", "--rdzv", "127.0.0.1:1", env={"NCCL_SOCKET_IFNAME": "=eth9"})
    assert result.returncode == 1
    text = " ".join(result.stdout.split())
    assert "NCCL_SOCKET_IFNAME==eth9 matches no interface" in text
    assert "127.0.0.1:1 (127.0.0.1) not reachable" in text
    assert mgft("doctor", "--rdzv", "nohostport").returncode == 2
