"""`mgft submit --backend local`: a real 2-process torchrun on CPU/gloo, end to end, and how
it ends on a bad row, SIGTERM and Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Tiny
from tests.launcher.torchrun_jobs import kill_all, processes_mentioning

SUBMIT = [sys.executable, "-m", "mgft.cli", "submit", "--backend", "local", "--gpus", "0",
          "--nproc-per-node", "2", "--strategy", "ddp", "--seq-len", "64", "--micro-batch", "4",
          "--lr", "3e-3"]


def submit(tiny: Tiny, output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SUBMIT, "--model", str(tiny.model_dir), "--dataset", str(tiny.data),
                           "--output", str(output), *extra],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory):
    output = tmp_path_factory.mktemp("submit") / "run"
    return output, submit(tiny, output, "--max-steps", "25")


def test_ddp_on_two_gloo_ranks_really_ran_and_learned(run) -> None:
    output, proc = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["backend"] == "gloo"
    assert metrics["strategy"] == "ddp"
    assert metrics["model_wrapper"] == "DistributedDataParallel"
    assert metrics["steps"] == 25
    assert metrics["last_loss"] < 0.8 * metrics["first_loss"], metrics["losses"]
    assert metrics["tokens_per_s"] > 0 and metrics["peak_memory_bytes"] > 0


def test_only_rank_0_streams_and_every_rank_is_logged(run) -> None:
    output, proc = run
    assert "[default0]:" in proc.stdout and "[default1]:" not in proc.stdout
    logs = sorted(p.relative_to(output / "logs").parts[-2:] for p in
                  (output / "logs").rglob("stdout.log"))
    assert logs == [("0", "stdout.log"), ("1", "stdout.log")]


def test_saved_adapter_reloads_and_was_trained(run, tiny: Tiny) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    output, _ = run
    base = AutoModelForCausalLM.from_pretrained(tiny.model_dir)
    model = PeftModel.from_pretrained(base, output / "adapter")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b, "no LoRA weights in the saved adapter"
    # peft initialises lora_B to zeros: trained weights are not.
    assert any(torch.count_nonzero(p) > 0 for p in lora_b)


def test_a_finished_output_is_refused_before_torchrun_starts(run, tiny: Tiny) -> None:
    output, _ = run
    before = (output / "metrics.json").read_bytes()
    runs_before = sorted((output / "logs").iterdir())
    proc = submit(tiny, output, "--max-steps", "2")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr == (f"mgft: error: --output {output}: already holds a finished run's "
                           "results (metrics.json); pick a new --output, or move the old "
                           "results away\n")
    assert (output / "metrics.json").read_bytes() == before
    assert sorted((output / "logs").iterdir()) == runs_before  # no torchrun run was started


def test_the_console_shows_no_third_party_noise(run) -> None:
    _, proc = run
    assert "kernels-community" not in proc.stderr  # bitsandbytes, on every import
    assert "OMP_NUM_THREADS" not in proc.stderr  # torchrun's own log: in logs/torchrun.log


def test_a_bad_row_the_trainer_finds_ends_the_console_without_torchruns_report(
        tiny: Tiny, tmp_path: Path) -> None:
    """Row 150 is past the launcher's look at the first rows: the trainer finds it."""
    rows = tiny.data.read_text().splitlines()[:200]
    rows[149] = rows[149][:-1]  # a truncated object
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(rows) + "\n")
    output = tmp_path / "run"
    proc = subprocess.run([*SUBMIT, "--model", str(tiny.model_dir), "--dataset", str(data),
                           "--output", str(output), "--max-steps", "2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    for noise in ("Traceback", "ChildFailedError", "torch.distributed", "Root Cause"):
        assert noise not in console, console
    # Whichever rank failed first, its reason is the last line.
    assert proc.stderr.rstrip().splitlines()[-1].endswith(
        f"--dataset {data}:150: invalid JSON: Expecting ',' delimiter; each row must be one JSON "
        "object (one per line in .jsonl; an array of them in .json)"), proc.stderr
    assert "ChildFailedError" in (output / "logs" / "torchrun.log").read_text()


def started(tiny: Tiny, output: Path) -> subprocess.Popen[str]:
    """A long run in a session of its own (as a terminal's foreground job), once it has
    written its first checkpoint."""
    proc = subprocess.Popen([*SUBMIT, "--model", str(tiny.model_dir), "--dataset",
                             str(tiny.data), "--output", str(output), "--max-steps", "100000",
                             "--save-every", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not (output / "checkpoints").is_dir() or not any(
            (output / "checkpoints").glob("step-*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.2)
    return proc


def test_sigterm_stops_at_a_checkpoint_says_so_and_exits_75(tiny: Tiny,
                                                             tmp_path: Path) -> None:
    output = tmp_path / "run"
    proc = started(tiny, output)
    try:
        os.kill(proc.pid, signal.SIGTERM)  # mgft alone, as `kill` sends it
        out, err = proc.communicate(timeout=600)
        assert processes_mentioning(str(output)) == [], "torchrun or a worker outlived mgft"
        assert proc.returncode == 75, err[-3000:]
        last = out.rstrip().splitlines()[-1]
        assert re.fullmatch(r"\[default0\]:mgft-train: stopped by SIGTERM after step (\d+) of "
                            r"\d+; checkpoint in .*; rerun the same command to resume "
                            r"\(exit 75\)", last), last
        assert "Traceback" not in out + err
    finally:
        kill_all(processes_mentioning(str(output)))


def test_ctrl_c_is_one_line_naming_the_checkpoint_kept(tiny: Tiny, tmp_path: Path) -> None:
    output = tmp_path / "run"
    proc = started(tiny, output)
    try:
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: its whole foreground group
        out, err = proc.communicate(timeout=600)
        assert processes_mentioning(str(output)) == []
        assert proc.returncode == 130, err[-3000:]
        assert "Traceback" not in out + err
        (line,) = [x for x in err.splitlines() if not x.startswith("[default0]:")]
        found = re.fullmatch(r"mgft: interrupted \(Ctrl-C\); the last checkpoint, step \d+ in "
                             r"(\S+), is kept: rerun the same command to resume from it", line)
        assert found, line
        assert (Path(found.group(1)) / "trainer_state.json").is_file()
    finally:
        kill_all(processes_mentioning(str(output)))


def test_an_output_that_cannot_hold_the_logs_is_one_line(tmp_path: Path) -> None:
    """A generation job's --output is not checked by the trainer's checks; its logs would be."""
    from mgft.backends.local.submit import run as run_local
    from mgft.spec.errors import SubmitError

    from tests.launcher.torchrun_jobs import command

    output = tmp_path / "out"
    output.write_text("")
    with pytest.raises(SubmitError, match=rf"^--output {output}: cannot create {output}/logs "
                                          r"there \(Not a directory\); pick a directory"):
        run_local(command(tmp_path / "worker.py", output / "logs"))


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root (unshare -m)")
def test_a_read_only_output_that_holds_logs_already_is_one_line(tmp_path: Path) -> None:
    """mkdir of an existing logs/ succeeds on a read-only filesystem; opening the log did not."""
    output = tmp_path / "out"
    (output / "logs").mkdir(parents=True)
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "from mgft.backends.local.submit import run; "
            "from tests.launcher.torchrun_jobs import command; "
            f"run(command(Path({str(tmp_path / 'worker.py')!r}), Path({str(output / 'logs')!r})))")
    where = str(output)
    proc = subprocess.run(["unshare", "-m", "sh", "-c",
                           f'mount --bind -o ro "{where}" "{where}" && exec "$0" -c "$1" "$2"',
                           sys.executable, code, str(Path(__file__).parents[4])],
                          capture_output=True, text=True, timeout=60)
    assert proc.stderr.splitlines()[-1] == (
        f"mgft.spec.errors.SubmitError: --output {output}: cannot create "
        f"{output}/logs/torchrun.log there (Read-only file system); pick a directory you can "
        "write to"), proc.stderr[-2000:]
