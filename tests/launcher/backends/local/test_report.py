"""mgft.backends.local.report: how a local job's end reads on the console. Real torchrun processes
whose workers are small scripts (`tests.launcher.torchrun_jobs`)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from mgft.backends.local import report as local_report
from mgft.backends.local.submit import run
from mgft.hw import host_memory

from tests.launcher.torchrun_jobs import command

RANK_1_FAILS_FIRST = """
import os, sys, time
if os.environ["LOCAL_RANK"] == "1":
    print("rank 1: --output /x holds a finished run; pick a new --output", file=sys.stderr)
    sys.exit(2)
time.sleep(60)  # rank 0 is stopped by torchrun before it says anything
"""

RANK_1_IS_KILLED = """
import os, signal, time
if os.environ["LOCAL_RANK"] == "1":
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer does
time.sleep(60)
"""

RANK_0_CRASHES = """
import os, time
if os.environ["LOCAL_RANK"] == "0":
    raise RuntimeError("the loss is nan at step 3")
time.sleep(60)
"""


def run_script(tmp_path: Path, text: str) -> tuple[int, str]:
    script = tmp_path / "worker.py"
    script.write_text(text)
    return run(command(script, tmp_path / "logs")), str(tmp_path / "logs")


def test_a_silent_rank_that_fails_first_has_its_reason_last(tmp_path: Path, capsys) -> None:
    code, log_dir = run_script(tmp_path, RANK_1_FAILS_FIRST)
    assert code == 2
    err = capsys.readouterr().err
    assert f"mgft: rank 1 (local rank 1) failed first, with exit code 2; every rank's output " \
           f"is under {log_dir}; the end of " in err
    assert err.rstrip().endswith(
        "  [1] rank 1: --output /x holds a finished run; pick a new --output")


def test_a_worker_killed_by_the_kernel_is_named_with_the_likely_cause(tmp_path: Path,
                                                                      capsys) -> None:
    code, log_dir = run_script(tmp_path, RANK_1_IS_KILLED)
    assert code == 128 + signal.SIGKILL
    last = capsys.readouterr().err.rstrip().splitlines()[-1]
    assert last.startswith("mgft: rank 1 was killed by SIGKILL (exit -9): most likely the "
                           "kernel's out-of-memory killer (the job needed more host memory "
                           "than the ")
    assert "use fewer processes (--nproc-per-node)" in last
    assert last.endswith(f"every rank's output is under {log_dir}")


def test_a_crash_ends_with_its_exception_and_torchruns_report_stays_in_the_log(
        tmp_path: Path, capsys) -> None:
    code, log_dir = run_script(tmp_path, RANK_0_CRASHES)
    assert code == 1
    out = capsys.readouterr()
    console = out.out + out.err
    assert "[default0]:RuntimeError: the loss is nan at step 3" in console  # its traceback
    assert "ChildFailedError" not in console and "torch/distributed" not in console
    assert out.err.rstrip().splitlines()[-1] == (
        "mgft: rank 0 failed with exit code 1: RuntimeError: the loss is nan at step 3; every "
        f"rank's output is under {log_dir}")
    torchrun_log = (tmp_path / "logs" / "torchrun.log").read_text()
    assert "ChildFailedError" in torchrun_log and "Root Cause" in torchrun_log


BOTH_STOP_AT_A_CHECKPOINT = """
import sys
print("mgft-train: stopped by SIGUSR2 after step 3 of 9; checkpoint in c; rerun the same "
      "command to resume (exit 75)", flush=True)
sys.exit(75)
"""


def test_a_stop_a_rank_was_sent_itself_is_not_called_a_failure(tmp_path: Path,
                                                                capsys) -> None:
    """SIGUSR2 or SIGTERM to a worker, not to mgft: the trainer's own line is the last word."""
    code, _ = run_script(tmp_path, BOTH_STOP_AT_A_CHECKPOINT)
    assert code == 75
    out = capsys.readouterr()
    assert out.out.rstrip().splitlines()[-1].endswith("rerun the same command to resume (exit 75)")
    assert "failed" not in out.err and "mgft:" not in out.err


def test_an_oom_kill_counted_by_the_cgroup_is_said_for_sure(monkeypatch) -> None:
    monkeypatch.setattr(host_memory, "oom_kills", lambda: 4)
    monkeypatch.setattr(host_memory, "total_bytes", lambda: 128 * 2**30)
    cause = local_report._kill_cause(-9, oom_kills_before=3)
    assert cause.startswith(": the kernel's out-of-memory killer (the job needed more host "
                            "memory than the 128.0 GiB this machine gives it)")
    assert local_report._kill_cause(-15, oom_kills_before=3) == ""


@pytest.mark.parametrize("sig,line,code", [
    (signal.SIGINT, "mgft: interrupted (Ctrl-C); KEPT", 130),
    (signal.SIGHUP, "mgft: stopped by SIGHUP; KEPT", 129),
    (signal.SIGTERM, "mgft: stopped by SIGTERM before the trainer could save a checkpoint; KEPT",
     143),
])
def test_a_stop_without_the_trainers_checkpoint_is_one_line(capsys, sig, line, code) -> None:
    assert local_report.stopped(sig, None, shown=False, kept=lambda: "KEPT") == code
    assert capsys.readouterr().err == line + "\n"


def test_the_trainers_checkpoint_line_is_shown_once(capsys) -> None:
    line = "[default0]:mgft-train: stopped by SIGTERM after step 3 of 9; ... (exit 75)"
    assert local_report.stopped(signal.SIGTERM, line, shown=True, kept=lambda: "") == 75
    assert capsys.readouterr().out == ""
    assert local_report.stopped(signal.SIGTERM, line, shown=False, kept=lambda: "") == 75
    assert capsys.readouterr().out == "mgft-train: stopped by SIGTERM after step 3 of 9; ... " \
                                      "(exit 75)\n"


def test_kept_names_the_last_checkpoint(tmp_path: Path) -> None:
    assert "no checkpoint had been written" in local_report.kept_checkpoint(str(tmp_path))
    for step in (10, 20):
        (tmp_path / "checkpoints" / f"step-{step:08d}").mkdir(parents=True)
        (tmp_path / "checkpoints" / f"step-{step:08d}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoints" / ".step-00000030.partial").mkdir()  # cut short: not kept
    assert local_report.kept_checkpoint(str(tmp_path)) == (
        f"the last checkpoint, step 20 in {tmp_path}/checkpoints/step-00000020, is kept: rerun "
        "the same command to resume from it")


def test_a_kill_names_the_plans_host_figure(monkeypatch) -> None:
    monkeypatch.setattr(host_memory, "oom_kills", lambda: None)
    monkeypatch.setattr(host_memory, "total_bytes", lambda: 128 * 2**30)
    cause = local_report._kill_cause(-9, oom_kills_before=None, planned_host=166.5 * 2**30)
    assert cause.startswith(": most likely the kernel's out-of-memory killer (the job needed "
                            "more host memory than the 128.0 GiB this machine gives it; the "
                            "plan puts it at 166.5 GiB)")
