"""mgft.node.slurm on one node, without Slurm: a real torchrun, whose workers keep the
preemption contract (contract_worker.py), run by node.run in this very process, which plays
the node task and gets the signals Slurm would send."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from mgft.contract.env import NodeEnv, SlurmEnv
from mgft.contract.exitcodes import PREEMPTED
from mgft.node import slurm as node
from mgft.node.torchrun import torchrun_path

WORKER = Path(__file__).with_name("contract_worker.py")
STEPS = 200  # 40 s at the worker's pace: every test stops it long before


def torchrun(out: Path, *extra: str) -> list[str]:
    return [torchrun_path(), "--standalone", "--nnodes=1", "--nproc-per-node=2",
            str(WORKER), str(out), str(STEPS), *extra]


def run_and_signal(argv: list[str], sends: list[tuple[str, int]]) -> node.Outcome:
    """node.run(argv); once both workers run, send each signal to "task" (this process) or
    "torchrun". Returns the outcome and fails if torchrun never started its workers."""
    started = threading.Event()

    def sender() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for pid in node._children(os.getpid()):
                if len(node.workers(pid)) == 2:
                    time.sleep(1.0)  # past the workers' own signal setup
                    started.set()
                    for target, sig in sends:
                        os.kill(os.getpid() if target == "task" else pid, sig)
                        time.sleep(0.3)
                    return
            time.sleep(0.2)

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    env = os.environ | NodeEnv(is_host=True).to_env()
    outcome = node.run(argv, env, nproc=2)
    thread.join(timeout=5)
    assert started.is_set(), "torchrun's two workers never showed up"
    return outcome


def test_usr2_to_the_task_reaches_the_workers_and_torchrun_survives_its_own(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # USR2 straight to torchrun first: its default action would kill it, orphan the workers
    # and lose their exit code. Then to the node task only: it must pass it on to the workers.
    outcome = run_and_signal(torchrun(tmp_path), [("torchrun", signal.SIGUSR2),
                                                   ("task", signal.SIGUSR2)])
    assert outcome.torchrun_code == 1, "torchrun did not end normally after its workers"
    assert outcome.trainer_code == PREEMPTED and outcome.preempted and not outcome.terminated
    assert outcome.ranks == (0, 1)
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["rank0.json", "rank1.json"]
    err = capfd.readouterr().err
    assert f"mgft-node: {socket.gethostname()} runs ranks 0,1" in err
    assert "mgft-node: passed USR2 on to ranks 0,1" in err


def test_node_0_requeues_a_preempted_job_and_the_others_leave_it_to_node_0(
        tmp_path: Path) -> None:
    outcome = run_and_signal(torchrun(tmp_path), [("task", signal.SIGUSR2)])
    requeued: list[str] = []
    head = SlurmEnv(job_id="77", nodelist="n[1-2]", node_id=0)
    other = SlurmEnv(job_id="77", nodelist="n[1-2]", node_id=1, proc_id=1)
    assert node.settle(outcome, other, requeued.append) == 0 and requeued == []
    assert node.settle(outcome, head, requeued.append) == 0 and requeued == ["77"]

    def refuses(job_id: str) -> None:
        raise OSError("scontrol: not found")

    # Where requeueing fails (no scontrol in the container), the job ends as preempted.
    assert node.settle(outcome, head, refuses) == PREEMPTED


def test_term_is_torchruns_to_pass_on_and_never_requeues(tmp_path: Path) -> None:
    # Slurm sends TERM to every process of the step; torchrun passes it on to the workers.
    outcome = run_and_signal(torchrun(tmp_path), [("torchrun", signal.SIGTERM),
                                                   ("task", signal.SIGTERM)])
    assert outcome.terminated
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "rank0.json", "rank1.json"]
    requeued: list[str] = []
    code = node.settle(outcome, SlurmEnv(job_id="5", nodelist="n1"), requeued.append)
    assert code != 0 and requeued == [], "Slurm requeues or cancels a TERMed job itself"


def test_term_after_a_lost_rank_does_not_claim_a_checkpoint(capsys) -> None:
    """A rank on another node died; this node's workers failed in their next collective,
    and then Slurm ended the step with TERM: no trainer could save a checkpoint."""
    outcome = node.Outcome(torchrun_code=1, trainer_code=1, failed_rank=2,
                           signals=frozenset({signal.SIGTERM}), ranks=(2, 3))
    assert node.settle(outcome, SlurmEnv(job_id="5", nodelist="n[1-2]"), lambda _: None) == 1
    err = capsys.readouterr().err
    assert "saves a checkpoint" not in err
    assert "after the trainer exited with code 1 on rank 2; no checkpoint was saved" in err


def test_a_failing_worker_gives_its_own_exit_code(tmp_path: Path) -> None:
    outcome = node.run(torchrun(tmp_path, "3"), os.environ | NodeEnv(is_host=True).to_env(),
                       nproc=2)
    assert outcome.torchrun_code == 1 and outcome.trainer_code == 3
    assert outcome.exit_code == 3 and outcome.failed_rank in (0, 1)
    assert node.settle(outcome, SlurmEnv(job_id="5", nodelist="n1"), lambda _: None) == 3


def test_a_finished_run_exits_0_and_keeps_slurms_gpu_choice(tmp_path: Path) -> None:
    # CUDA_VISIBLE_DEVICES as Slurm sets it for the step reaches the workers untouched.
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "3,1"} | NodeEnv(is_host=True).to_env()
    steps = [torchrun_path(), "--standalone", "--nnodes=1", "--nproc-per-node=2",
             str(Path(__file__).with_name("env_worker.py")), str(tmp_path)]
    outcome = node.run(steps, env, nproc=2)
    assert outcome.exit_code == 0 and not outcome.preempted
    seen = {json.loads(p.read_text())["CUDA_VISIBLE_DEVICES"] for p in tmp_path.glob("*.json")}
    assert seen == {"3,1"}
