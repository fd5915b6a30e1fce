"""NodeTask under submitit on the real cluster, its workers keeping the preemption contract
(contract_worker.py): USR2 and an outside `scontrol requeue` both end in a resumed,
COMPLETED job. The same with the real trainer is in tests/launcher/backends/slurm/test_submit.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mgft.node.slurm_task import NodeTask
from mgft.render import slurm_job as options

from tests.launcher.render import cases
from tests.slurm_cluster import Cluster

WORKER = Path(__file__).with_name("contract_worker.py")
STEPS = 60  # 12 s at the worker's pace


@pytest.fixture
def submit_contract_job(slurm_cluster: Cluster, tmp_path: Path, slurm_jobs: list[str],
                        monkeypatch: pytest.MonkeyPatch):
    import submitit

    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
    spec = cases.spec(**{"backend": "slurm", "resources.nodes": 2, "resources.gpus": 0,
                         "resources.nproc_per_node": 2, "slurm.time": "30"})
    executor = submitit.SlurmExecutor(folder=tmp_path / "slurm")
    executor.update_parameters(**options.submitit_parameters(spec))
    out = tmp_path / "out"
    out.mkdir()
    task = NodeTask(nnodes=2, nproc=2,
                    torchrun_after=[str(WORKER), str(out), str(STEPS)],
                    env={"PYTHONUNBUFFERED": "1"})
    job = executor.submit(task)
    slurm_jobs.append(job.job_id)

    def logs() -> str:
        return "".join(p.read_text() for p in sorted((tmp_path / "slurm").glob("*_log.*")))

    slurm_cluster.wait_for("the workers' first steps",
                           lambda: "rank 3 step 5/" in logs() and "rank 0 step 5/" in logs())
    return job, out, logs


def _assert_resumed(cluster: Cluster, job, out: Path) -> None:
    assert cluster.wait_final(job.job_id) == "COMPLETED"
    assert cluster.sacct_state(job.job_id)[1] == 1, "requeued exactly once"
    done = {p.name: json.loads(p.read_text()) for p in out.glob("rank*.json")}
    assert sorted(done) == ["rank0.json", "rank1.json", "rank2.json", "rank3.json"]
    assert all(0 < d["start"] < STEPS for d in done.values()), done  # resumed, not restarted
    results = job.results()  # submitit's own record of the final run, one per node
    assert sorted(r["node"] for r in results) == [0, 1]
    assert sorted(sum((r["ranks"] for r in results), [])) == [0, 1, 2, 3]


def test_usr2_checkpoints_requeues_through_submitit_and_resumes(
        slurm_cluster: Cluster, submit_contract_job) -> None:
    job, out, logs = submit_contract_job
    slurm_cluster.run("scancel", "--signal=USR2", job.job_id)
    _assert_resumed(slurm_cluster, job, out)
    text = logs()
    assert f"Requeued job {job.job_id}" in text  # submitit's requeue, from node 0
    assert "saved a checkpoint at step" in text and "after ['SIGUSR2'" in text


def test_outside_requeue_sigterm_resumes_from_the_checkpoint(
        slurm_cluster: Cluster, submit_contract_job) -> None:
    job, out, logs = submit_contract_job
    slurm_cluster.run("scontrol", "requeue", job.job_id)
    _assert_resumed(slurm_cluster, job, out)
    text = logs()
    assert "after ['SIGTERM'" in text and "Slurm is ending this job (SIGTERM)" in text
    assert f"Requeued job {job.job_id}" not in text  # Slurm requeued it, not submitit
