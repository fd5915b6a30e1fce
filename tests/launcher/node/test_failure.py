"""mgft.node.failure on torchrun's real output: the exit-barrier error a 2-node job can leave in
a node's log when the other node's torchrun, which holds the rendezvous store, exits first.
The node task must keep torchrun's exit code (0: every rank here finished) and say in one
line that the DistNetworkError and its C++ frames are harmless."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from mgft.contract.env import SlurmEnv
from mgft.node import slurm as node
from mgft.node.failure import EXIT_BARRIER_NOTE, FailureScan
from mgft.node.torchrun import torchrun_path

WORKER = """
import os, sys, time
time.sleep(float(sys.argv[2]))
open(os.path.join(sys.argv[1], os.environ["RANK"] + ".done"), "w").close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent(worker: Path, out: Path, port: int, sleep: float) -> list[str]:
    """One of two torchrun agents ("nodes") of a job on this host, one worker each."""
    return [torchrun_path(), "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=exit-barrier", str(worker),
            str(out), str(sleep)]


def wait_until(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.1)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_exit_barrier_error_is_named_harmless_and_the_exit_code_kept(
        tmp_path: Path, capsys) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    port = free_port()
    # The first agent hosts the rendezvous store; its worker outlasts the other's. Killing it
    # once the other agent's worker is done leaves that agent in its exit barrier with the
    # store gone: what happens when the store's node finishes first and exits.
    host = subprocess.Popen(agent(worker, tmp_path, port, 120), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: listening(port), "rendezvous store")

        def kill_the_host() -> None:
            wait_until(lambda: (tmp_path / "1.done").exists(), "finished worker on node 1")
            time.sleep(1.0)  # node 1's torchrun is in its exit barrier now
            workers = node._children(host.pid)  # torchrun starts them in sessions of their own
            os.killpg(host.pid, signal.SIGKILL)
            for pid in workers:
                os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_the_host, daemon=True)
        killer.start()
        outcome = node.run(agent(worker, tmp_path, port, 0), os.environ.copy(), nproc=1)
        killer.join(timeout=5)
    finally:
        if host.poll() is None:
            os.killpg(host.pid, signal.SIGKILL)
        host.wait()
    assert outcome.torchrun_code == 0 and outcome.exit_code == 0 and outcome.exit_barrier_error
    assert node.settle(outcome, SlurmEnv(job_id="5", nodelist="n[1-2]"), lambda _: None) == 0
    err = capsys.readouterr().err
    assert "Error waiting on exit barrier" in err and "DistNetworkError" in err  # the noise
    assert err.endswith(f"mgft-node: {EXIT_BARRIER_NOTE}\n")
    assert "trainer exited with code" not in err


def test_a_run_without_it_says_nothing_more(tmp_path: Path, capsys) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    outcome = node.run([torchrun_path(), "--standalone", "--nnodes=1", "--nproc-per-node=1",
                        str(worker), str(tmp_path), "0"], os.environ.copy(), nproc=1)
    assert (outcome.exit_code, outcome.exit_barrier_error) == (0, False)
    assert node.settle(outcome, SlurmEnv(job_id="5", nodelist="n1"), lambda _: None) == 0
    err = capsys.readouterr().err  # at most "mgft-node: <host> runs ranks 0"
    assert EXIT_BARRIER_NOTE not in err and "trainer exited" not in err


def test_the_scan_keeps_a_failed_workers_code_beside_the_noise() -> None:
    """A worker that failed is still the report, whatever else torchrun logged."""
    scan = FailureScan()
    for line in ["E1205 api.py:1008] Error waiting on exit barrier. Elapsed: 1.07 seconds\n",
                 "Root Cause (first observed failure):\n", "[0]:\n",
                 "  rank      : 2 (local_rank: 0)\n", "  exitcode  : 2 (pid: 7)\n"]:
        scan.feed(line)
    assert (scan.exit_barrier_error, scan.rank, scan.exit_code) == (True, 2, 2)
