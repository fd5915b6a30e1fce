"""`mgft submit --backend slurm` on a real 2-node Slurm cluster (slurm/cluster.sh): the tiny
model fine-tuned on 2 nodes x 2 CPU/gloo ranks, the rendered script through plain sbatch,
preemption and outside requeue, a crashing job, and cancel."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import Tiny
from tests.launcher.render.test_slurm_job import sbatch_lines
from tests.slurm_cluster import Cluster

STEPS = 25
_RANKS = re.compile(r"^mgft-node: (\S+) runs ranks ([\d,]+)$", re.M)


def job_flags(tiny: Tiny, output: Path, *, steps: int = STEPS, dataset: Path | None = None,
              ) -> list[str]:
    # --time 30: submitit takes any USR2 in a job of 10 minutes or less for a time-out.
    return ["--backend", "slurm", "--nodes", "2", "--gpus", "0", "--nproc-per-node", "2",
            "--model", str(tiny.model_dir), "--dataset", str(dataset or tiny.data),
            "--output", str(output), "--max-steps", str(steps), "--seq-len", "64",
            "--micro-batch", "4", "--lr", "3e-3", "--time", "30"]


def submit(cluster: Cluster, flags: list[str], jobs: list[str] | None = None) -> str:
    result = cluster.mgft("submit", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    job_id = result.stdout.strip()
    assert job_id.isdigit(), result.stdout
    if jobs is not None:
        jobs.append(job_id)
    return job_id


def node_logs(output: Path, job_id: str, kind: str = "*") -> str:
    return "".join(p.read_text(errors="replace")
                   for p in sorted((output / "slurm").glob(f"{job_id}_*_log.{kind}")))


def wait_for_step(cluster: Cluster, output: Path, job_id: str, step: int) -> None:
    cluster.wait_for(f"step {step} in job {job_id}'s logs",
                     lambda: f"[rank0]:step {step}/" in node_logs(output, job_id, "out"))


@pytest.fixture(scope="module")
def reference(slurm_cluster: Cluster, tiny: Tiny, tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted run: the job the other tests compare with."""
    output = tmp_path_factory.mktemp("slurm-ref") / "run"
    job_id = submit(slurm_cluster, job_flags(tiny, output))
    try:
        state = slurm_cluster.wait_final(job_id)
    finally:
        slurm_cluster.run("scancel", job_id, check=False)
    return job_id, output, state


def test_two_nodes_by_two_ranks_fine_tune_and_save(reference) -> None:
    job_id, output, state = reference
    assert state == "COMPLETED", node_logs(output, job_id)[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["world_size"] == 4 and metrics["backend"] == "gloo"
    assert metrics["model_wrapper"] == "DistributedDataParallel"
    assert metrics["steps"] == STEPS
    assert metrics["last_loss"] < 0.8 * metrics["first_loss"], metrics["losses"]
    assert (output / "adapter" / "adapter_config.json").is_file()
    # Each node task says which global ranks its torchrun ran: 2 + 2, on two hosts.
    placed = {host: {int(r) for r in ranks.split(",")}
              for host, ranks in _RANKS.findall(node_logs(output, job_id, "err"))}
    assert sorted(placed) == ["node1", "node2"], placed
    assert sorted(len(r) for r in placed.values()) == [2, 2]
    assert set().union(*placed.values()) == {0, 1, 2, 3}


def test_status_logs_and_list_say_what_happened(reference, slurm_cluster: Cluster) -> None:
    job_id, output, _ = reference
    status = slurm_cluster.mgft("status", job_id, "--json")
    assert status.returncode == 0, status.stderr
    seen = json.loads(status.stdout)
    assert (seen["state"], seen["active"], seen["output"]) == ("COMPLETED", False, str(output))
    assert seen["exit_code"] == "0:0" and seen["nodelist"] == "node[1-2]"
    assert f"{output}/slurm/{job_id}_1_log.err" in seen["logs"]

    rank0 = slurm_cluster.mgft("logs", job_id, "--rank", "0").stdout
    assert f"step {STEPS}/{STEPS} loss" in rank0 and "mgft-train: 25 steps on 4 x cpu" in rank0
    assert "[rank" not in rank0 and "mgft-node:" not in rank0
    every = slurm_cluster.mgft("logs", job_id, "-f").stdout  # ended: -f returns at once
    assert "[rank0]:step 1/" in every and "mgft-node: node2 runs ranks" in every

    listed = json.loads(slurm_cluster.mgft("list", "--json").stdout)
    assert {"job_id": job_id, "state": "COMPLETED"}.items() <= next(
        j for j in listed if j["job_id"] == job_id).items()


def test_rendered_script_through_plain_sbatch_trains_the_same(
        reference, slurm_cluster: Cluster, tiny: Tiny, tmp_path: Path,
        slurm_jobs: list[str]) -> None:
    ref_id, ref_output, _ = reference
    output = tmp_path / "run"
    render = slurm_cluster.mgft("render", *job_flags(tiny, output))
    assert render.returncode == 0, render.stderr
    (tmp_path / "job.sbatch").write_text(render.stdout)
    job_id = slurm_cluster.run("sbatch", "--parsable", "job.sbatch", cwd=tmp_path).stdout.strip()
    slurm_jobs.append(job_id)
    state = slurm_cluster.wait_final(job_id)
    log = next(tmp_path.glob(f"*-{job_id}.out"))  # the script's --output=NAME-%j.out
    assert state == "COMPLETED", log.read_text()[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())
    ref = json.loads((ref_output / "metrics.json").read_text())
    assert metrics["world_size"] == 4 and metrics["steps"] == STEPS
    assert metrics["losses"] == pytest.approx(ref["losses"], rel=1e-5)
    # The same sbatch options as the script submitit wrote for the reference job, but for the
    # job's name and log paths (and the time limit, which submitit takes in minutes).
    mine = sbatch_lines(render.stdout)
    theirs = sbatch_lines((ref_output / "slurm" / f"{ref_id}_submission.sh").read_text())
    for lines in (mine, theirs):
        for name in ("job-name", "output", "error", "time"):
            lines.pop(name, None)
    assert mine == theirs
    # mgft knows nothing of this job, so Slurm tells it where the log is.
    rank0 = slurm_cluster.mgft("logs", job_id, "--rank", "0")
    assert f"step {STEPS}/{STEPS}" in rank0.stdout, rank0.stderr


def _assert_resumed(cluster: Cluster, job_id: str, output: Path, reference) -> None:
    final = cluster.wait_final(job_id)
    _, restarts = cluster.sacct_state(job_id)
    logs = node_logs(output, job_id, "out")
    assert final == "COMPLETED", logs[-3000:]
    assert restarts >= 1, "the job was never requeued"
    assert (output / "checkpoints").is_dir(), "no checkpoint under <output>/checkpoints"
    assert logs.count("[rank0]:step 1/") == 1, "the requeued run started over"
    metrics = json.loads((output / "metrics.json").read_text())
    ref = json.loads((reference[1] / "metrics.json").read_text())
    assert metrics["steps"] == STEPS
    assert metrics["last_loss"] == pytest.approx(ref["last_loss"], rel=1e-4)


def test_usr2_preemption_checkpoints_requeues_and_resumes(
        reference, slurm_cluster: Cluster, tiny: Tiny, tmp_path: Path,
        slurm_jobs: list[str]) -> None:
    output = tmp_path / "run"
    job_id = submit(slurm_cluster, job_flags(tiny, output), slurm_jobs)
    wait_for_step(slurm_cluster, output, job_id, 5)
    slurm_cluster.run("scancel", "--signal=USR2", job_id)
    _assert_resumed(slurm_cluster, job_id, output, reference)


def test_outside_scontrol_requeue_resumes_from_the_checkpoint(
        reference, slurm_cluster: Cluster, tiny: Tiny, tmp_path: Path,
        slurm_jobs: list[str]) -> None:
    output = tmp_path / "run"
    job_id = submit(slurm_cluster, job_flags(tiny, output), slurm_jobs)
    wait_for_step(slurm_cluster, output, job_id, 5)
    slurm_cluster.run("scontrol", "requeue", job_id)
    _assert_resumed(slurm_cluster, job_id, output, reference)


def test_a_crashing_job_is_reported_failed_promptly_with_its_error(
        slurm_cluster: Cluster, tiny: Tiny, tmp_path: Path, slurm_jobs: list[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "output": "y"}\nthis is not json\n')
    start = time.monotonic()
    job_id = submit(slurm_cluster, job_flags(tiny, tmp_path / "run", dataset=bad), slurm_jobs)
    seen: dict = {}

    def failed() -> bool:
        result = slurm_cluster.mgft("status", job_id, "--json", timeout=30)
        seen.update(json.loads(result.stdout))
        return not seen["active"]

    slurm_cluster.wait_for("end of the crashing job", failed, timeout=120)
    took = time.monotonic() - start
    assert seen["state"] == "FAILED", seen
    assert took < 90, f"FAILED only after {took:.0f} s"
    said = slurm_cluster.mgft("status", job_id, timeout=30).stdout
    # The job's own exit code may be the signal that stopped the other node; the trainer's
    # is the one that says what went wrong.
    assert re.search(rf"^job {job_id} \(.*\): FAILED, exit code \d+.*\(the trainer's: 2\)",
                     said), said
    assert "last lines of the error:" in said
    # Every rank finds the bad row and says so; whichever exits first ends the job.
    assert re.search(rf"\[rank(\d+)\]:mgft-train: (rank \1: )?--dataset {re.escape(str(bad))}"
                     r":2: invalid JSON", said), said
    follow = slurm_cluster.mgft("logs", job_id, "-f", timeout=30)  # returns: the job ended
    assert follow.returncode == 0 and "invalid JSON" in follow.stdout


def test_a_job_slurm_refuses_is_one_line_and_exit_2(
        slurm_cluster: Cluster, tiny: Tiny, tmp_path: Path) -> None:
    result = slurm_cluster.mgft("submit", *job_flags(tiny, tmp_path / "run"),
                                "--partition", "nope")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("mgft: error: Slurm refused the job: sbatch: error: Batch job "
                             "submission failed: Invalid partition name specified\n")


def _job_processes(job_id: str) -> list[int]:
    """Processes of this job: they carry its id in their environment."""
    mark = f"SLURM_JOB_ID={job_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if mark in env:
                found.append(int(entry))
    return found


def test_cancel_stops_the_job_and_leaves_no_process(
        slurm_cluster: Cluster, tiny: Tiny, tmp_path: Path, slurm_jobs: list[str]) -> None:
    output = tmp_path / "run"
    job_id = submit(slurm_cluster, job_flags(tiny, output, steps=2000), slurm_jobs)
    wait_for_step(slurm_cluster, output, job_id, 2)
    assert len(_job_processes(job_id)) >= 2 + 2 * 3, "expected node tasks, torchruns, ranks"
    result = slurm_cluster.mgft("cancel", job_id)
    assert result.returncode == 0, result.stderr
    assert f"mgft: job {job_id} cancelled (CANCELLED)" in result.stdout
    slurm_cluster.wait_for("the end of every process of the job",
                           lambda: not _job_processes(job_id), timeout=10)
    assert slurm_cluster.sacct_state(job_id)[0].startswith("CANCELLED")
    assert not (output / "metrics.json").exists()
    again = slurm_cluster.mgft("cancel", job_id)
    assert again.returncode == 0 and "already ended" in again.stdout


def test_status_names_a_node_taken_out_of_service_under_a_running_job(
        slurm_cluster: Cluster, tiny: Tiny, tmp_path: Path, slurm_jobs: list[str]) -> None:
    """Slurm's own node state, from sinfo: squeue and sacct say RUNNING throughout."""
    output = tmp_path / "run"
    job_id = submit(slurm_cluster, job_flags(tiny, output, steps=2000), slurm_jobs)
    wait_for_step(slurm_cluster, output, job_id, 2)
    slurm_cluster.run("scontrol", "update", "nodename=node2", "state=drain",
                      "reason=ECC errors")
    try:
        said = slurm_cluster.mgft("status", job_id, timeout=30)
        assert said.returncode == 0, said.stderr
        assert "node node2 is draining (Slurm: draining, reason: ECC errors)" in said.stdout, \
            said.stdout
    finally:
        slurm_cluster.run("scontrol", "update", "nodename=node2", "state=resume", check=False)
        slurm_cluster.run("scancel", job_id, check=False)
