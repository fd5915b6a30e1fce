"""`mgft status|logs|cancel|list --backend k8s` against the recording API stand-in: pods are
found by the operators' own labels and `--rank` picks the same node under either API; a pod
not yet scheduled answers its log with 204 No Content, as a real API server does."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from mgft.backends.k8s import manage as k8s_manage
from mgft.cli.main import main

from tests.launcher.backends.k8s.fake_apiserver import (
    FakeApiServer,
    Request,
    no_content,
    not_found,
    write_kubeconfig,
)

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
              "metadata": {"name": "ft-1", "namespace": "ml", "uid": "ft-1-uid",
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


UNSCHEDULABLE = ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes "
                 "are available: 3 No preemption victims found for incoming pod.")


def unscheduled(name: str, labels: dict[str, str]) -> dict:
    """A pod as the API server shows it while no node has the GPUs: no container statuses."""
    return {"metadata": {"name": name, "namespace": "ml", "labels": labels},
            "spec": {"containers": [{"name": "pytorch", "image": "i"}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": UNSCHEDULABLE}]}}


def pod_list(*pods: dict) -> tuple[int, dict]:
    return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": list(pods)}


MASTER = {"training.kubeflow.org/job-name": "ft-1", "training.kubeflow.org/replica-type":
          "master", "training.kubeflow.org/replica-index": "0"}


def test_logs_of_a_pod_not_yet_scheduled_say_why(api: FakeApiServer) -> None:
    """The real server answers the log of an unscheduled pod with 204 and no body; the
    client returns None, which mgft used to write (TypeError)."""
    api.on("GET", PODS, pod_list(unscheduled("ft-1-master-0", MASTER)))
    api.on("GET", f"{PODS}/ft-1-master-0/log", no_content())
    result = mgft("logs", "ft-1")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == (
        "mgft: pod ft-1-master-0 is Pending (Unschedulable: 0/3 nodes are available: 3 "
        "Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption "
        "victims found for incoming pod); no log yet (`mgft logs -f` waits for it)\n")


def test_logs_follow_waits_for_the_pod_to_start_then_follows(
        api: FakeApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(k8s_manage, "WAIT_POLL_S", (0.01, 0.02), raising=False)
    looks = []
    creating = v1_pod("ft-1", "master", 0, phase="Pending", waiting="ContainerCreating")

    def pods(request: Request) -> tuple[int, dict]:
        looks.append(request)
        if len(looks) <= 2:
            return pod_list(unscheduled("ft-1-master-0", MASTER))
        return pod_list(creating if len(looks) == 3 else v1_pod("ft-1", "master", 0))

    def log(request: Request) -> tuple[int, object]:  # as the real server answers
        if len(looks) <= 2:
            return no_content()
        if len(looks) == 3:
            return 400, {"kind": "Status", "code": 400, "message": 'container "pytorch" in pod '
                         '"ft-1-master-0" is waiting to start: ContainerCreating'}
        return 200, "".join(f"line {i}\n" for i in range(50))

    api.on("GET", PODS, pods)
    api.on("GET", f"{PODS}/ft-1-master-0/log", log)
    result = mgft("logs", "ft-1", "-f")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1:] == ["line 49"]
    assert result.stderr.splitlines() == [
        "mgft: pod ft-1-master-0 is Pending (Unschedulable: 0/3 nodes are available: 3 "
        "Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption "
        "victims found for incoming pod); waiting for it to start (Ctrl-C to stop)",
        "mgft: pod ft-1-master-0 is Pending (ContainerCreating); waiting for it to start "
        "(Ctrl-C to stop)"]
    assert len(looks) == 4
    assert [r.query for r in api.requests if r.path.endswith("/log")] == [
        {"container": "pytorch", "follow": "true"}]


def test_logs_follow_waits_for_pods_that_do_not_exist_yet(
        api: FakeApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after submit the operator may not have made the pods yet."""
    monkeypatch.setattr(k8s_manage, "WAIT_POLL_S", (0.01, 0.02), raising=False)
    api.on("GET", PODS, pod_list(), pod_list(v1_pod("ft-1", "master", 0)))
    api.on("GET", f"{PODS}/ft-1-master-0/log", (200, "hello\n"))
    result = mgft("logs", "ft-1", "-f")
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello\n"
    assert "PyTorchJob ft-1 has no pods yet (Running); waiting for it to start" in result.stderr


def test_logs_follow_ctrl_c_while_waiting_is_clean(
        api: FakeApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    api.on("GET", PODS, pod_list(unscheduled("ft-1-master-0", MASTER)))
    api.on("GET", f"{PODS}/ft-1-master-0/log", no_content())

    def interrupt(seconds: float) -> None:
        assert seconds <= 10
        raise KeyboardInterrupt

    monkeypatch.setattr("time.sleep", interrupt)
    result = mgft("logs", "ft-1", "-f")
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output and "waiting for it to start" in result.stderr
    assert not [r for r in api.requests if r.path.endswith("/log")]


def test_logs_follow_of_a_job_that_ended_before_its_pod_started(
        api: FakeApiServer) -> None:
    failed = PYTORCHJOB | {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    api.on("GET", f"{PTJ}/ft-1", (200, failed))
    api.on("GET", PODS, pod_list(unscheduled("ft-1-master-0", MASTER)))
    api.on("GET", f"{PODS}/ft-1-master-0/log", no_content())
    result = mgft("logs", "ft-1", "-f")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "and the job is Failed: no log will come" in result.stderr


def config_maps(owned: bool) -> tuple[int, dict]:
    owners = [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "ft-1",
               "uid": "ft-1-uid"}] if owned else []
    return 200, {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {}, "items": [
        {"metadata": {"name": "ft-1-config", "namespace": "ml", "ownerReferences": owners,
                      "labels": {"mgft.dev/job": "ft-1"}}}]}


@pytest.mark.parametrize("owned", [True, False])
def test_cancel_deletes_the_job_and_waits_until_its_pods_are_gone(
        api: FakeApiServer, monkeypatch: pytest.MonkeyPatch, owned: bool) -> None:
    monkeypatch.setattr(k8s_manage, "CANCEL_POLL_S", 0.01, raising=False)
    terminating = v1_pod("ft-1", "master", 0)
    api.on("GET", f"{PTJ}/ft-1", (200, PYTORCHJOB), not_found("ft-1"))
    api.on("GET", PODS, pod_list(terminating), pod_list(terminating), pod_list())
    api.on("GET", "/api/v1/namespaces/ml/configmaps", config_maps(owned))
    api.on("DELETE", f"{PTJ}/ft-1", (200, {"kind": "Status", "apiVersion": "v1",
                                           "metadata": {}, "status": "Success"}))
    result = mgft("cancel", "ft-1")
    assert result.exit_code == 0, result.output
    delete = next(r for r in api.requests if r.method == "DELETE")
    assert (delete.path, delete.body) == (f"{PTJ}/ft-1", {"propagationPolicy": "Background"})
    after = api.requests[api.requests.index(delete) + 1:]
    assert [r.path for r in after] == [PODS, PODS, PODS, f"{PTJ}/ft-1"]
    assert "deleted, and its pods have stopped" in result.stdout
    assert "claims with outputs are kept" in result.stdout
    if owned:
        assert "ConfigMap ft-1-config goes with it" in result.stdout
    else:
        assert "ConfigMap ft-1-config is not owned by the job and stays (`kubectl delete " \
            "configmap ft-1-config -n ml`)" in result.stdout


def test_cancel_gives_up_waiting_after_a_bound(api: FakeApiServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(k8s_manage, "CANCEL_POLL_S", 0.01, raising=False)
    monkeypatch.setattr(k8s_manage, "CANCEL_WAIT_S", 0.05, raising=False)
    api.on("GET", f"{PTJ}/ft-1", (200, PYTORCHJOB), not_found("ft-1"))
    api.on("DELETE", f"{PTJ}/ft-1", (200, {"kind": "Status", "status": "Success"}))
    result = mgft("cancel", "ft-1")  # the fixture's 3 pods never go
    assert result.exit_code == 1
    assert "PyTorchJob ml/ft-1 deleted, but 3 pod(s) still stopping after 0.05 s" in \
        result.stderr
    assert "kubectl get pods -n ml -l training.kubeflow.org/job-name=ft-1" in result.stderr


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
