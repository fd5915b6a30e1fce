"""mgft.backends.local.signals: stop signals reach torchrun's workers, and mgft outlives them. Real
torchrun processes whose workers take 2 s to "write a checkpoint" after a stop signal."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mgft.backends.local.signals import group_alive, wait_group

from tests.launcher.torchrun_jobs import kill_all, processes_mentioning, running, start

WORKER = """
import os, signal, sys, time
from pathlib import Path

out, rank, got = Path(sys.argv[1]), os.environ["LOCAL_RANK"], []
for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(sig, lambda signum, frame: got.append(signal.Signals(signum).name))
(out / f"{rank}.pid").write_text(str(os.getpid()))
while not got:
    time.sleep(0.05)
time.sleep(2)  # finishing the step and writing a checkpoint
(out / f"{rank}.done").write_text(" ".join(got))
sys.exit(75)
"""


def started(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = start(script, tmp_path / "logs", str(tmp_path))
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"{r}.pid").is_file() for r in (0, 1)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.1)
    time.sleep(0.2)  # each worker writes its pid file after installing its handlers
    return proc, [int((tmp_path / f"{r}.pid").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_reaches_every_worker_and_mgft_waits_for_them(tmp_path: Path, sig) -> None:
    proc, workers = started(tmp_path)
    try:
        os.kill(proc.pid, sig)  # mgft alone, as `kill` or a scheduler sends it
        proc.communicate(timeout=120)
        assert running(workers) == [], "a worker outlived mgft"
        for rank in (0, 1):
            assert (tmp_path / f"{rank}.done").read_text().split()[0] == sig.name
        assert proc.returncode == 128 + sig
    finally:
        kill_all(processes_mentioning(str(tmp_path)))


def test_a_second_signal_does_not_cut_the_checkpoint_short(tmp_path: Path) -> None:
    """torchrun leaves at once on a second SIGTERM; mgft still waits for the workers."""
    proc, workers = started(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGTERM)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=120)
        assert running(workers) == []
        assert all((tmp_path / f"{rank}.done").is_file() for rank in (0, 1))
    finally:
        kill_all(processes_mentioning(str(tmp_path)))


def test_when_mgft_is_killed_outright_the_workers_still_stop_at_a_checkpoint(
        tmp_path: Path) -> None:
    proc, workers = started(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)  # no handler runs: the kernel tells torchrun
        proc.communicate(timeout=60)
        deadline = time.monotonic() + 60
        while running(workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert running(workers) == []
        assert [(tmp_path / f"{r}.done").read_text().split()[0] for r in (0, 1)] == \
            ["SIGTERM", "SIGTERM"]
    finally:
        kill_all(processes_mentioning(str(tmp_path)))


def test_wait_group_ends_what_outstays_its_time() -> None:
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    assert group_alive(sleeper.pid)
    assert wait_group(sleeper.pid, timeout=0.5) is False  # killed
    sleeper.wait(timeout=10)
    assert not group_alive(sleeper.pid)
    assert wait_group(sleeper.pid, timeout=0.5) is True
