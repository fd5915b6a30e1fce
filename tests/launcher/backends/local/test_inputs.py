"""mgft.backends.local.inputs: what the trainer would refuse, found by `mgft submit --backend local`
before torchrun starts: one line, exit 2, nothing started."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mgft.contract.argv import parse_train, to_argv

from tests.conftest import Tiny

ROW = json.dumps({"instruction": "a", "output": "b"})


def submit(tiny: Tiny, output: Path, dataset: Path | None = None, *extra: str
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mgft.cli", "submit", "--backend", "local", "--gpus", "0",
         "--nproc-per-node", "2", "--model", str(tiny.model_dir), "--dataset",
         str(dataset or tiny.data), "--output", str(output), *extra],
        capture_output=True, text=True, timeout=120)


def refused(proc: subprocess.CompletedProcess[str], output: Path) -> str:
    """The one line; no torchrun ran (it would have made <output>/logs)."""
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert not (output / "logs").exists()
    return proc.stderr.rstrip("\n")


def test_an_output_that_is_a_file(tiny: Tiny, tmp_path: Path) -> None:
    output = tmp_path / "out.txt"
    output.write_text("")
    assert refused(submit(tiny, output), tmp_path) == (
        f"mgft: error: --output {output}: exists and is not a directory; pick a new --output "
        "directory")


def test_an_output_holding_a_finished_run(tiny: Tiny, tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text("{}")
    assert refused(submit(tiny, tmp_path), tmp_path) == (
        f"mgft: error: --output {tmp_path}: already holds a finished run's results "
        "(metrics.json); pick a new --output, or move the old results away")


@pytest.mark.parametrize(("name", "text", "says"), [
    ("d.csv", "a,b\n", "unknown file type '.csv'; pass a .jsonl, .json or .parquet file"),
    ("d.jsonl", "", "holds no rows; check the path, or that the file was written completely"),
    ("d.jsonl", f"{ROW}\n{ROW}\n{ROW[:-1]}\n", ":3: invalid JSON: Expecting ',' delimiter"),
    ("d.json", f"[{ROW}, [1]]", ":1: row is a JSON list, not an object"),
])
def test_a_dataset_the_trainer_would_refuse(tiny: Tiny, tmp_path: Path, name: str, text: str,
                                            says: str) -> None:
    data = tmp_path / name
    data.write_text(text)
    line = refused(submit(tiny, tmp_path / "run", data), tmp_path / "run")
    assert line.startswith(f"mgft: error: --dataset {data}") and says in line, line


def test_a_resume_with_changed_flags(tiny: Tiny, tmp_path: Path) -> None:
    """The checkpoint's flags are compared as the trainer compares them."""
    from mgft_train import checkpoint

    output = tmp_path / "run"
    train = trainer_spec(tiny, output, "train.lr=1e-3")
    step = checkpoint.step_dir(output, 10)
    step.mkdir(parents=True)
    state = {"step": 10, "losses": [], "tokens": 0, "elapsed_s": 0.0, "world_size": 2,
             "spec": checkpoint.spec_record(train)}
    (step / checkpoint.STATE_FILE).write_text(json.dumps(state))
    line = refused(submit(tiny, output, None, "--lr", "2e-3"), output)
    assert line.startswith("mgft: error: --lr 0.002: the run in ") and \
        "rerun with --lr 0.001 to resume it" in line, line


def trainer_spec(tiny: Tiny, output: Path, *overrides: str):
    """The job's flags as every rank parses them from the argv `mgft submit` renders."""
    from mgft.cli.main import spec_from_options

    spec = spec_from_options(None, overrides, (), backend="local", gpus="0",
                             nproc_per_node="2", model=str(tiny.model_dir),
                             dataset=str(tiny.data), output=str(output))
    return parse_train(to_argv(spec.train))


def test_the_checks_import_no_torch(tiny: Tiny, tmp_path: Path) -> None:
    code = f"""
import sys
from mgft.backends.local import inputs as local_inputs
from mgft.cli.main import spec_from_options
spec = spec_from_options(None, (), (), backend="local", gpus="0", nproc_per_node="2",
                         model={str(tiny.model_dir)!r}, dataset={str(tiny.data)!r},
                         output={str(tmp_path / "run")!r})
local_inputs.check(spec)
print(sorted(m for m in ("torch", "transformers", "datasets", "peft") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_a_job_bigger_than_this_machines_memory(tiny: Tiny, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused before torchrun, against a fake /proc/meminfo of 1 GiB (and no cgroup)."""
    from click.testing import CliRunner
    from mgft.cli.main import main
    from mgft.hw import host_memory

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        1048576 kB\nMemFree:          524288 kB\n")
    monkeypatch.setattr(host_memory, "MEMINFO", meminfo)
    monkeypatch.setattr(host_memory, "CGROUP_ROOT", tmp_path / "no-cgroup")
    output = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "submit", "--backend", "local", "--gpus", "1", "--strategy", "zero3-offload",
        "--model", str(tiny.model_dir), "--dataset", str(tiny.data), "--output", str(output)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    # A tiny model: the process's runtime (2 GiB) and zero3-offload's fixed 3 GiB beside it
    assert line.startswith("mgft: error: --strategy zero3-offload: plans 5.0 GiB of host "
                           "memory per node (1 processes, peak at ") and line.endswith(
        ") and this machine's memory is 1.0 GiB; use fewer processes per node (--gpus), another "
        "strategy (`mgft plan` shows each one's host memory), or --activation-checkpointing so "
        "that one keeping its state on the GPU fits")
    assert not (output / "logs").exists()
