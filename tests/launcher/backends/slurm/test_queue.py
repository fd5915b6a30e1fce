from __future__ import annotations

from pathlib import Path

from mgft.backends.slurm import logs
from mgft.backends.slurm import queue as jobs

SACCT = ("12|mgft-a|REQUEUED|0:0|00:00:09|node[1-2]\n"
         "12|mgft-a|CANCELLED by 0|0:15|00:00:04|node[1-2]\n")


def test_sacct_rows_of_a_requeued_job() -> None:
    job = jobs.parse_sacct(SACCT, "12")
    assert job is not None
    assert (job.state, job.exit_code, job.restarts, job.active) == ("CANCELLED", "0:15", 1, False)
    assert jobs.parse_sacct(SACCT, "1") is None


def test_squeue_row() -> None:
    job = jobs.parse_squeue("7|mgft-b|PENDING|0:00||BeginTime\n", "7")
    assert job is not None and job.active and job.reason == "BeginTime" and job.nodelist == ""


def test_error_tail_prefers_what_the_ranks_and_node_tasks_said() -> None:
    lines = ["[rank1]:loading\n", "[rank0]:mgft-train: --dataset d.jsonl:2: invalid JSON\n",
             "mgft-node: trainer exited with code 2 on rank 0\n", "Root Cause (first failure):\n",
             "  exitcode  : 2\n", "Traceback (most recent call last):\n"]
    assert jobs.error_tail(lines, limit=2) == [
        "[rank0]:mgft-train: --dataset d.jsonl:2: invalid JSON",
        "mgft-node: trainer exited with code 2 on rank 0"]
    assert jobs.error_tail(["a\n", "\n", "b\n"]) == ["a", "b"]


def test_rank_lines_drop_the_prefix_and_other_ranks() -> None:
    lines = ["[rank1]:x\n", "[rank10]:y\n", "[rank1]:z\n", "plain\n"]
    assert list(jobs.rank_lines(lines, 1)) == ["x\n", "z\n"]


def test_follower_hands_out_complete_lines_once(tmp_path: Path) -> None:
    a, b = tmp_path / "a.out", tmp_path / "b.err"
    follower = logs.Follower([a, b])
    assert list(follower.read()) == []  # neither exists yet
    a.write_text("one\ntw")
    assert list(follower.read()) == ["one\n"]
    with a.open("a") as f:
        f.write("o\n")
    b.write_text("err\n")
    assert list(follower.read()) == ["two\n", "err\n"]
    with a.open("a") as f:
        f.write("tail")
    assert list(follower.read()) == [] and list(follower.read(final=True)) == ["tail"]


def test_the_trainers_exit_code_comes_from_the_node_logs() -> None:
    lines = ["[rank0]:x\n", "mgft-node: trainer exited with code 2 on rank 0\n",
             "mgft-node: trainer exited with code 1 on rank 2\n"]
    assert jobs.trainer_exit_code(lines) == 2 and jobs.trainer_exit_code(["ok\n"]) is None
    job = jobs.JobState(job_id="3", name="n", state="FAILED", exit_code="15:0",
                        trainer_exit_code=2)
    assert jobs.describe(job).startswith("job 3 (n): FAILED, exit code 15 (the trainer's: 2)")


# What sinfo --Node --format SINFO_FORMAT printed on the local 2-node cluster after node2's
# slurmd was killed (slurm/cluster.sh; Slurm 22.05): "*" within a minute, down 5 minutes on.
SINFO_LOST = "node1|idle|none\nnode2|completing*|none\n"
SINFO_DOWN = "node1|idle|none\nnode2|down*|Not responding\n"


def test_a_lost_or_down_node_is_named_with_slurms_state_and_reason() -> None:
    assert jobs.node_trouble("node1|mixed|none\nnode2|allocated|none\n") == []
    assert jobs.node_trouble(SINFO_LOST) == ["node node2 is not responding (Slurm: completing*)"]
    assert jobs.node_trouble(SINFO_DOWN) == [
        "node node2 is not responding (Slurm: down*, reason: Not responding)"]
    assert jobs.node_trouble("node3|drained|Kill task failed\n") == [
        "node node3 is drained (Slurm: drained, reason: Kill task failed)"]


def test_status_of_a_job_held_in_completing_by_a_lost_node_says_why() -> None:
    # squeue lists only the nodes that have not yet reported the job's end.
    job = jobs.JobState(job_id="10", name="n", state="COMPLETING", elapsed="0:25",
                        nodelist="node2", node_trouble=jobs.node_trouble(SINFO_LOST))
    assert jobs.describe(job).splitlines()[:3] == [
        "job 10 (n): COMPLETING, ran 0:25 on node2",
        "node node2 is not responding (Slurm: completing*)",
        "the job has ended; Slurm keeps it COMPLETING until that node answers again or it "
        "marks the node down (after its SlurmdTimeout, 300 s by default)"]
    assert jobs.describe(job).count("\n") == 2
    # Without the nodes' states, squeue's list of the nodes not yet done is still a hint.
    waiting = jobs.describe(jobs.JobState(job_id="10", name="n", state="COMPLETING",
                                          nodelist="node2"))
    assert waiting.splitlines()[1] == "the job has ended; Slurm waits for node2 to report it"
    assert jobs.JobState(job_id="10", name="n", state="RUNNING", node_trouble=[]).to_json()[
        "node_trouble"] == []
