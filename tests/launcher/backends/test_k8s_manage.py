"""`mgft status|logs|cancel|list --backend k8s` against the recording API stand-in: pods are
found by the operators' own labels and `--rank` picks the same node under either API."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from mgft.cli import main

from tests.launcher.backends.fake_apiserver import FakeApiServer, not_found, write_kubeconfig

PTJ = "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs"
TJ = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"
PODS = "/api/v1/namespaces/ml/pods"


def pod(name: str, labels: dict[str, str], phase: str = "Running", waiting: str | None = None,
        restarts: int = 0, container: str = "pytorch") -> dict:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {"metadata": {"name": name, "namespace": "ml", "labels": labels},
            "spec": {"containers": [{"name": container, "image": "i"}]},
            "status": {"phase": phase, "containerStatuses": [
                {"name": container, "image": "i", "imageID": "", "ready": phase == "Running",
                 "restartCount": restarts, "state": state}]}}


def v1_pod(job: str, rtype: str, index: int, **kw) -> dict:
    return pod(f"{job}-{rtype}-{index}", {"training.kubeflow.org/job-name": job,
                                          "training.kubeflow.org/replica-type": rtype,
                                          "training.kubeflow.org/replica-index": str(index)},
               **kw)


PYTORCHJOB = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
              "metadata": {"name": "ft-1", "namespace": "ml",
                           "creationTimestamp": "2026-11-21T05:00:00Z"},
              "spec": {"pytorchReplicaSpecs": {"Master": {}, "Worker": {}}},
              "status": {"conditions": [
                  {"type": "Created", "status": "True", "lastTransitionTime": "t0"},
                  {"type": "Running", "status": "True", "lastTransitionTime": "t1"}]}}
TRAINJOB = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": "tj", "namespace": "ml",
                         "creationTimestamp": "2026-11-21T06:00:00Z"},
            "spec": {}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with FakeApiServer() as server:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", server.url)))
        server.on("GET", f"{PTJ}/ft-1", (200, PYTORCHJOB))
        server.on("GET", PODS, (200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                      "items": [
                                          v1_pod("ft-1", "worker", 1, phase="Pending",
                                                 waiting="ContainerCreating"),
                                          v1_pod("ft-1", "master", 0, restarts=2),
                                          v1_pod("ft-1", "worker", 0)]}))
        yield server


def mgft(*args: str):
    return CliRunner().invoke(main, [*args, "--backend", "k8s", "--namespace", "ml"])


def test_status_shows_state_conditions_and_pods_by_node_rank(api: FakeApiServer) -> None:
    result = mgft("status", "ft-1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "PyTorchJob ml/ft-1: Running"
    pods = [line.split() for line in lines if line.startswith("  node")]
    assert [(p[1], p[2], p[3]) for p in pods] == [("0", "ft-1-master-0", "Running"),
                                                   ("1", "ft-1-worker-0", "Running"),
                                                   ("2", "ft-1-worker-1", "Pending")]
    assert "(ContainerCreating)" in lines[-1] and "restarts 2" in result.stdout
    pod_list = next(r for r in api.requests if r.path == PODS)
    assert pod_list.query == {"labelSelector": "training.kubeflow.org/job-name=ft-1"}


def test_logs_of_a_rank_read_that_pods_trainer_container(api: FakeApiServer) -> None:
    api.on("GET", f"{PODS}/ft-1-worker-0/log", (200, "step 1/20 loss 6.3\nstep 2/20 loss 6.0\n"))
    result = mgft("logs", "ft-1", "--rank", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "step 1/20 loss 6.3\nstep 2/20 loss 6.0\n"
    log_call = api.requests[-1]
    assert (log_call.path, log_call.query) == (f"{PODS}/ft-1-worker-0/log",
                                               {"container": "pytorch"})


def test_logs_follow_streams(api: FakeApiServer) -> None:
    api.on("GET", f"{PODS}/ft-1-master-0/log", (200, "".join(f"line {i}\n" for i in range(500))))
    result = mgft("logs", "ft-1", "-f")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "line 499"
    assert api.requests[-1].query == {"container": "pytorch", "follow": "true"}


def test_logs_rank_without_a_pod_names_the_ranks_there_are(api: FakeApiServer) -> None:
    result = mgft("logs", "ft-1", "--rank", "7")
    assert result.exit_code == 2
    assert "--rank 7: PyTorchJob ft-1 has no pod of that node rank (pods for ranks: 0, 1, 2)" \
        in result.stderr


def test_trainjob_is_found_when_no_pytorchjob_has_the_name(api: FakeApiServer) -> None:
    api.on("GET", f"{TJ}/tj", (200, TRAINJOB))
    api.on("GET", PODS, (200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                               "items": [pod(f"tj-node-0-{i}-abcde", {
                                   "jobset.sigs.k8s.io/jobset-name": "tj",
                                   "batch.kubernetes.io/job-completion-index": str(i)},
                                   container="node") for i in (1, 0)]}))
    api.on("GET", f"{PODS}/tj-node-0-1-abcde/log", (200, "node one\n"))
    result = mgft("logs", "tj", "--rank", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "node one\n"
    assert [r.path for r in api.requests[:2]] == [f"{PTJ}/tj", f"{TJ}/tj"]
    assert api.requests[2].query == {"labelSelector": "jobset.sigs.k8s.io/jobset-name=tj"}
    assert api.requests[-1].query == {"container": "node"}


def test_unknown_job_is_one_line(api: FakeApiServer) -> None:
    result = mgft("status", "nope")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "no PyTorchJob or TrainJob named nope in namespace ml" in result.stderr


def test_cancel_deletes_the_job_in_the_background(api: FakeApiServer) -> None:
    api.on("DELETE", f"{PTJ}/ft-1", (200, {"kind": "Status", "apiVersion": "v1",
                                           "metadata": {}, "status": "Success"}))
    result = mgft("cancel", "ft-1")
    assert result.exit_code == 0, result.output
    delete = api.requests[-1]
    assert (delete.method, delete.path, delete.body) == (
        "DELETE", f"{PTJ}/ft-1", {"propagationPolicy": "Background"})
    assert "claims with outputs are kept" in result.stdout


def test_list_shows_mgft_jobs_of_both_apis_and_skips_a_missing_operator(
        api: FakeApiServer) -> None:
    api.on("GET", PTJ, (200, {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJobList",
                              "metadata": {}, "items": [PYTORCHJOB]}))
    api.on("GET", TJ, (200, {"apiVersion": "trainer.kubeflow.org/v1alpha1",
                             "kind": "TrainJobList", "metadata": {}, "items": [TRAINJOB]}))
    result = mgft("list")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert rows == [["ft-1", "PyTorchJob", "Running", "2026-11-21T05:00:00Z"],
                    ["tj", "TrainJob", "Complete", "2026-11-21T06:00:00Z"]]
    assert all(r.query == {"labelSelector": "app.kubernetes.io/name=mgft"}
               for r in api.requests)
    api.on("GET", TJ, not_found("trainjobs"))
    result = mgft("list")
    assert result.exit_code == 0 and "tj " not in result.stdout and "ft-1" in result.stdout
