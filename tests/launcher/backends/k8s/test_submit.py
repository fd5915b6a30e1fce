"""`mgft submit --backend k8s` against a recording stand-in for the API server: the exact API
paths and bodies the official client sends, and the answers a real cluster gives when the
operator is missing (404), the job exists (409), RBAC says no (403) or nothing listens."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from mgft.cli.main import main
from mgft.render import render

from tests.launcher.backends.k8s.fake_apiserver import (
    FakeApiServer,
    Request,
    api_resources,
    forbidden,
    not_found,
    status_body,
    strict_decoding_error,
    unserved,
    write_kubeconfig,
)
from tests.launcher.render import cases

ARGS = ["--backend", "k8s", "--image", cases.IMAGE, "--model", cases.MODEL, "--dataset",
        cases.DATASET, "--gpus", "4", "--nodes", "2", "--strategy", "zero2", "--name", "ft-1"]
PTJ = "/apis/kubeflow.org/v1"
TJ = "/apis/trainer.kubeflow.org/v1alpha1"


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with FakeApiServer() as server:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", server.url)))
        server.on("GET", PTJ, (200, api_resources("kubeflow.org/v1", "PyTorchJob",
                                                  "pytorchjobs")))
        server.on("GET", TJ, (200, api_resources("trainer.kubeflow.org/v1alpha1", "TrainJob",
                                                 "trainjobs")))
        for ns in ("default", "ml"):
            server.on("GET", f"/api/v1/namespaces/{ns}",
                      (200, {"kind": "Namespace", "apiVersion": "v1",
                             "metadata": {"name": ns}}))
        yield server


def submit(*args: str):
    return CliRunner().invoke(main, ["submit", *ARGS, *args])


def created(body: dict) -> tuple[int, dict]:
    out = yaml.safe_load(yaml.safe_dump(body))
    out["metadata"] |= {"uid": "1f5c-uid", "resourceVersion": "7"}
    return 201, out


def existing(body: dict) -> tuple[int, dict]:
    return 200, created(body)[1]


def rendered(*args: str) -> list[dict]:
    result = CliRunner().invoke(main, ["render", *ARGS, *args])
    assert result.exit_code == 0, result.output
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def owned_by_the_job(doc: dict) -> dict:
    out = yaml.safe_load(yaml.safe_dump(doc))
    out["metadata"]["ownerReferences"] = [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                                           "name": "ft-1", "uid": "1f5c-uid"}]
    return out


def test_creates_the_job_then_its_companions_exactly_as_rendered(api: FakeApiServer) -> None:
    extra = ("--namespace", "ml", "--config-map", "--pvc-size", "100Gi")
    config_map, claim, job = rendered(*extra)
    base = f"{PTJ}/namespaces/ml/pytorchjobs"
    api.on("POST", "/api/v1/namespaces/ml/configmaps", created(config_map))
    api.on("POST", "/api/v1/namespaces/ml/persistentvolumeclaims", created(claim))
    api.on("POST", base, created(job))
    result = submit(*extra)
    assert result.exit_code == 0, result.output
    assert api.calls() == [
        ("GET", PTJ),  # the operator's API (discovery), before anything is created
        ("GET", "/api/v1/namespaces/ml"),
        ("GET", f"{base}/ft-1"),  # no job of that name yet (404)
        ("POST", base),  # the job first: its uid is the companions' owner
        ("POST", "/api/v1/namespaces/ml/configmaps"),
        ("POST", "/api/v1/namespaces/ml/persistentvolumeclaims"),
        ("GET", TJ),  # created: does this cluster serve TrainJob too? (advice only)
    ]
    posts = [r.body for r in api.requests if r.method == "POST"]
    # The ConfigMap is created owned by the job (no patch); the claim never is (outputs).
    assert posts == [job, owned_by_the_job(config_map), claim]
    assert "created pytorchjobs.kubeflow.org/ft-1 in namespace ml" in result.stdout
    assert "ConfigMap ft-1-config: created, owned by the job (deleted with it)" in result.stdout
    assert "claim ft-1-output: created; kept after the job" in result.stdout
    assert "mgft logs -f ft-1 --backend k8s --namespace ml" in result.stdout


def test_patch_forbidden_and_update_allowed_still_creates_an_owned_configmap(
        api: FakeApiServer) -> None:
    """Partial RBAC, as a real Role may grant: create and update ConfigMaps, but not patch.
    The job used to be created, the ownership patch refused, and mgft exited 2 without saying
    the job existed; owning from the create needs neither right."""
    config_map, job = rendered("--config-map")
    cm = "/api/v1/namespaces/default/configmaps"
    api.on("POST", f"{PTJ}/namespaces/default/pytorchjobs", created(job))
    api.on("POST", cm, created(config_map))
    api.on("PATCH", f"{cm}/ft-1-config", forbidden("patch", "configmaps", "default",
                                                   "ft-1-config"))
    api.on("PUT", f"{cm}/ft-1-config", (200, config_map))
    result = submit("--config-map")
    assert result.exit_code == 0, result.output
    assert "created pytorchjobs.kubeflow.org/ft-1" in result.stdout
    assert not [r for r in api.requests if r.method in ("PATCH", "PUT", "DELETE")]
    assert api.requests[-2].body == owned_by_the_job(config_map)


def test_job_create_refused_by_rbac_creates_nothing_else(api: FakeApiServer) -> None:
    config_map, claim, _ = rendered("--config-map", "--pvc-size", "1Gi")
    api.on("POST", f"{PTJ}/namespaces/default/pytorchjobs",
           forbidden("create", "pytorchjobs", "default", group="kubeflow.org"))
    api.on("POST", "/api/v1/namespaces/default/configmaps", created(config_map))
    api.on("POST", "/api/v1/namespaces/default/persistentvolumeclaims", created(claim))
    err = one_line_error(submit("--config-map", "--pvc-size", "1Gi"))
    assert "creating PyTorchJob default/ft-1: forbidden by RBAC" in err
    assert err.rstrip().endswith("; nothing was created")
    assert [m for m, _ in api.calls()] == ["GET", "GET", "GET", "POST"]
    assert api.left_behind() == []


def test_a_refused_companion_deletes_what_this_submit_created(api: FakeApiServer) -> None:
    """The job and the ConfigMap are created, then the claim is refused (a quota): both are
    deleted again, and the message says so."""
    config_map, _, job = rendered("--config-map", "--pvc-size", "1Gi")
    base, cm = f"{PTJ}/namespaces/default/pytorchjobs", "/api/v1/namespaces/default/configmaps"
    api.on("POST", base, created(job))
    api.on("POST", cm, created(config_map))
    api.on("POST", "/api/v1/namespaces/default/persistentvolumeclaims",
           forbidden("create", "persistentvolumeclaims", "default"))
    deleted = (200, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                     "status": "Success"})
    api.on("DELETE", f"{base}/ft-1", deleted)
    api.on("DELETE", f"{cm}/ft-1-config", (200, config_map))
    err = one_line_error(submit("--config-map", "--pvc-size", "1Gi"))
    assert "creating PersistentVolumeClaim default/ft-1-output: forbidden by RBAC" in err
    assert "nothing was left behind (deleted configmap/ft-1-config, " \
        "pytorchjobs.kubeflow.org/ft-1, created by this submit)" in err
    assert api.left_behind() == []
    job_delete = next(r for r in api.requests if r.path == f"{base}/ft-1" and
                      r.method == "DELETE")
    assert job_delete.body == {"propagationPolicy": "Background"}  # pods made meanwhile go


def test_a_claim_that_was_there_is_never_deleted(api: FakeApiServer) -> None:
    config_map, _, job = rendered("--config-map", "--pvc-size", "1Gi")
    base = f"{PTJ}/namespaces/default/pytorchjobs"
    api.on("POST", base, created(job))
    api.on("POST", "/api/v1/namespaces/default/persistentvolumeclaims",
           (409, status_body(409, "AlreadyExists", "exists")))
    api.on("POST", "/api/v1/namespaces/default/configmaps",
           forbidden("create", "configmaps", "default"))
    api.on("DELETE", f"{base}/ft-1", (200, {"kind": "Status", "status": "Success"}))
    err = one_line_error(submit("--config-map", "--pvc-size", "1Gi"))
    assert "nothing was left behind (deleted pytorchjobs.kubeflow.org/ft-1, " in err
    assert [r.path for r in api.requests if r.method == "DELETE"] == [f"{base}/ft-1"]


def test_a_rollback_that_is_refused_names_what_is_left(api: FakeApiServer) -> None:
    config_map, job = rendered("--config-map")
    base = f"{PTJ}/namespaces/default/pytorchjobs"
    api.on("POST", base, created(job))
    api.on("POST", "/api/v1/namespaces/default/configmaps",
           forbidden("create", "configmaps", "default"))
    api.on("DELETE", f"{base}/ft-1", forbidden("delete", "pytorchjobs", "default", "ft-1",
                                               "kubeflow.org"))
    err = one_line_error(submit("--config-map"))
    assert "left behind: pytorchjobs.kubeflow.org/ft-1 (could not delete: " in err
    assert "delete with `kubectl delete -n default pytorchjobs.kubeflow.org/ft-1`" in err
    assert api.left_behind() == [f"{base}/ft-1"]


def test_a_retry_after_a_refused_submit_needs_no_update_rights(api: FakeApiServer) -> None:
    """The first submit's job is refused; the retry finds nothing in its way (before, the
    ConfigMap created ahead of the job stayed, and the retry needed `update` to replace it)."""
    config_map, job = rendered("--config-map")
    base, cm = f"{PTJ}/namespaces/default/pytorchjobs", "/api/v1/namespaces/default/configmaps"
    objects: dict[str, dict] = {}

    def create(request: Request) -> tuple[int, dict]:  # a server that remembers objects
        path = f"{request.path}/{request.body['metadata']['name']}"
        if path in objects:
            return 409, status_body(409, "AlreadyExists", "already exists")
        if request.path == base and len([r for r in api.requests if r.path == base]) == 1:
            return forbidden("create", "pytorchjobs", "default", group="kubeflow.org")
        objects[path] = created(request.body)[1]
        return 201, objects[path]

    def delete(request: Request) -> tuple[int, dict]:
        return (200, objects.pop(request.path)) if request.path in objects else \
            not_found(request.path)

    for path in (base, cm):
        api.on("POST", path, create)
    for path in (f"{base}/ft-1", f"{cm}/ft-1-config"):
        api.on("DELETE", path, delete)
        api.on("PUT", path, forbidden("update", "configmaps", "default", "ft-1-config"))
    one_line_error(submit("--config-map"))
    assert objects == {}
    result = submit("--config-map")
    assert result.exit_code == 0, result.output
    assert set(objects) == {f"{base}/ft-1", f"{cm}/ft-1-config"}
    assert objects[f"{cm}/ft-1-config"]["metadata"]["ownerReferences"][0]["name"] == "ft-1"


def test_trainjob_goes_to_the_trainer_v2_api(api: FakeApiServer) -> None:
    (job,) = rendered("--k8s-api", "trainjob")
    api.on("POST", f"{TJ}/namespaces/default/trainjobs", created(job))
    result = submit("--k8s-api", "trainjob")
    assert result.exit_code == 0, result.output
    assert api.calls() == [("GET", TJ), ("GET", "/api/v1/namespaces/default"),
                           ("GET", f"{TJ}/namespaces/default/trainjobs/ft-1"),
                           ("POST", f"{TJ}/namespaces/default/trainjobs")]
    assert api.requests[-1].body == job
    assert api.requests[0].query == {}


# What each cluster's API discovery says for the Trainer v2 group (the fixture serves both APIs).
TRAINER_V2_DISCOVERY = {
    "both APIs served": (200, api_resources("trainer.kubeflow.org/v1alpha1", "TrainJob",
                                            "trainjobs")),
    "v1 only": unserved(),
    # the group is there, with runtimes but no TrainJob (a partial install)
    "group without trainjobs": (200, api_resources("trainer.kubeflow.org/v1alpha1",
                                                   "ClusterTrainingRuntime",
                                                   "clustertrainingruntimes")),
    "discovery refused": forbidden("get", "trainjobs", "default",
                                   group="trainer.kubeflow.org"),
    "discovery failing": (503, status_body(503, "ServiceUnavailable", "etcd leader changed")),
}


@pytest.mark.parametrize("cluster", TRAINER_V2_DISCOVERY)
def test_pytorchjob_warns_only_where_the_cluster_serves_trainjob_too(
        api: FakeApiServer, cluster: str) -> None:
    """One line on stderr, after the job is created, when discovery shows trainjobs; any other
    answer (not served, partial, refused, failing) is no advice and still a clean submit."""
    (job,) = rendered()
    api.on("POST", f"{PTJ}/namespaces/default/pytorchjobs", created(job))
    api.on("GET", TJ, TRAINER_V2_DISCOVERY[cluster])
    result = submit()
    assert result.exit_code == 0, result.output
    assert "created pytorchjobs.kubeflow.org/ft-1" in result.stdout
    assert api.calls()[-2:] == [("POST", f"{PTJ}/namespaces/default/pytorchjobs"), ("GET", TJ)]
    if cluster == "both APIs served":
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith("mgft: warning: this cluster also serves TrainJob")
        assert "frozen upstream" in result.stderr and "--k8s-api trainjob" in result.stderr
    else:
        assert result.stderr == ""


def test_trainjob_gets_no_advice_and_no_extra_discovery(api: FakeApiServer) -> None:
    (job,) = rendered("--k8s-api", "trainjob")
    api.on("POST", f"{TJ}/namespaces/default/trainjobs", created(job))
    result = submit("--k8s-api", "trainjob")
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and ("GET", PTJ) not in api.calls()


def test_a_failed_submit_stays_one_line_on_a_cluster_serving_both(api: FakeApiServer) -> None:
    api.on("POST", f"{PTJ}/namespaces/default/pytorchjobs",
           forbidden("create", "pytorchjobs", "default", group="kubeflow.org"))
    one_line_error(submit())
    assert ("GET", TJ) not in api.calls()


def test_the_job_is_created_with_strict_field_validation(api: FakeApiServer) -> None:
    (job,) = rendered()
    api.on("POST", f"{PTJ}/namespaces/default/pytorchjobs", created(job))
    assert submit().exit_code == 0
    (post,) = [r for r in api.requests if r.method == "POST"]
    assert post.query == {"fieldValidation": "Strict"}


def test_a_trainer_without_runtime_patches_is_named_not_silently_pruned(
        api: FakeApiServer) -> None:
    """Trainer v2.0/v2.1 have podTemplateOverrides: without Strict, the API server would drop
    runtimePatches and the pods would run without /dev/shm, the claim and the security context."""
    api.on("POST", f"{TJ}/namespaces/default/trainjobs",
           strict_decoding_error("TrainJob", "v1alpha1", "spec.runtimePatches"))
    err = one_line_error(submit("--k8s-api", "trainjob"))
    assert "Kubeflow Trainer has no runtimePatches (it is older than v2.2)" in err
    assert "needs Trainer v2.3 or later" in err and "--version 2.4.0" in err
    assert "--k8s-api pytorchjob" in err and err.rstrip().endswith("nothing was created")
    assert api.left_behind() == []


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("mgft: error: ") and result.stderr.count("\n") == 1
    return result.stderr


@pytest.mark.parametrize("discovery", [
    unserved(),
    (200, api_resources("kubeflow.org/v1", "TFJob", "tfjobs")),  # operator without PyTorchJob
])
def test_no_crd_says_the_operator_is_not_installed_and_how_to_install(
        api: FakeApiServer, discovery) -> None:
    api.on("GET", PTJ, discovery)
    err = one_line_error(submit())
    assert "the Kubeflow training operator is not installed" in err
    assert "kubectl apply --server-side -k" in err and "v1.9.4" in err
    assert api.calls() == [("GET", PTJ)]


def test_missing_namespace(api: FakeApiServer) -> None:
    err = one_line_error(submit("--namespace", "nope"))
    assert "namespace nope does not exist; create it with `kubectl create namespace nope`" in err
    assert not [r for r in api.requests if r.method == "POST"]


def test_existing_job_is_refused_without_replace(api: FakeApiServer) -> None:
    (job,) = rendered()
    api.on("GET", f"{PTJ}/namespaces/default/pytorchjobs/ft-1", existing(job))
    err = one_line_error(submit())
    assert "PyTorchJob ft-1 already exists in namespace default; pass --replace" in err
    assert not [r for r in api.requests if r.method in ("POST", "DELETE")]


def test_replace_deletes_waits_until_gone_then_creates(api: FakeApiServer) -> None:
    (job,) = rendered()
    path = f"{PTJ}/namespaces/default/pytorchjobs/ft-1"
    api.on("GET", path, existing(job), existing(job), not_found("ft-1"))
    api.on("DELETE", path, (200, status_body(200, "", "deleting")))
    api.on("POST", f"{PTJ}/namespaces/default/pytorchjobs", created(job))
    result = submit("--replace")
    assert result.exit_code == 0, result.output
    assert api.calls()[2:] == [("GET", path), ("DELETE", path), ("GET", path), ("GET", path),
                               ("POST", f"{PTJ}/namespaces/default/pytorchjobs"), ("GET", TJ)]
    delete = next(r for r in api.requests if r.method == "DELETE")
    assert delete.body == {"propagationPolicy": "Foreground"}


def test_conflict_on_create_and_rbac_denial_are_one_line(api: FakeApiServer) -> None:
    base = f"{PTJ}/namespaces/default/pytorchjobs"
    api.on("POST", base, (409, status_body(409, "AlreadyExists",
                                           'pytorchjobs.kubeflow.org "ft-1" already exists')))
    err = one_line_error(submit())
    assert "creating PyTorchJob default/ft-1: it already exists" in err
    message = ('pytorchjobs.kubeflow.org is forbidden: User "me" cannot create resource '
               '"pytorchjobs" in API group "kubeflow.org" in the namespace "default"')
    api.on("POST", base, (403, status_body(403, "Forbidden", message)))
    err = one_line_error(submit())
    assert "creating PyTorchJob default/ft-1: forbidden by RBAC" in err and message in err
    assert "kubectl auth can-i" in err


def test_namespace_read_forbidden_is_not_fatal(api: FakeApiServer) -> None:
    (job,) = rendered()
    api.on("GET", "/api/v1/namespaces/default", (403, status_body(403, "Forbidden", "no")))
    api.on("POST", f"{PTJ}/namespaces/default/pytorchjobs", created(job))
    assert submit().exit_code == 0


def test_existing_claim_is_reused_and_foreign_configmap_refused(api: FakeApiServer) -> None:
    extra = ("--config-map", "--pvc-size", "1Gi")
    config_map, claim, job = rendered(*extra)
    exists = (409, status_body(409, "AlreadyExists", "exists"))
    api.on("POST", "/api/v1/namespaces/default/persistentvolumeclaims", exists)
    api.on("POST", "/api/v1/namespaces/default/configmaps", exists)
    foreign = yaml.safe_load(yaml.safe_dump(config_map))
    foreign["metadata"]["labels"] = {"owner": "someone-else"}
    api.on("GET", "/api/v1/namespaces/default/configmaps/ft-1-config", (200, foreign))
    api.on("POST", f"{PTJ}/namespaces/default/pytorchjobs", created(job))
    api.on("DELETE", f"{PTJ}/namespaces/default/pytorchjobs/ft-1", (200, {"kind": "Status"}))
    err = one_line_error(submit(*extra))
    assert "ConfigMap ft-1-config already exists in namespace default and is not this job's" in err
    assert "nothing was left behind (deleted pytorchjobs.kubeflow.org/ft-1," in err
    assert not [r for r in api.requests if r.method in ("PUT", "PATCH")]
    assert api.left_behind() == []  # and the claim that was there is untouched


def test_connection_refused_is_one_line_and_quick(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc",
                                                          f"http://127.0.0.1:{port}")))
    start = time.monotonic()
    err = one_line_error(submit())
    assert time.monotonic() - start < 20
    assert f"cannot reach the Kubernetes API server at http://127.0.0.1:{port} " \
           "(connection refused)" in err


def test_no_kubeconfig_and_not_in_a_cluster(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    err = one_line_error(submit())
    assert f"no Kubernetes credentials: KUBECONFIG={tmp_path / 'missing'}: no such file" in err
    assert "point KUBECONFIG at a kubeconfig" in err


@pytest.mark.parametrize("content,why", [
    (b"just some text\n", "expected a mapping with clusters, users, contexts"),
    (b"[1, 2]\n", "expected a mapping with clusters, users, contexts"),
    (b"clusters: [\n", "not YAML: "),
    (b"\xff\xfe\x00", "not UTF-8 text"),
])
@pytest.mark.parametrize("command", [["submit", *ARGS], ["status", "ft-1", "--backend", "k8s"]])
def test_a_kubeconfig_that_is_garbage_is_one_line_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, why: str,
        command: list[str]) -> None:
    (tmp_path / "kc").write_bytes(content)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kc"))
    err = one_line_error(CliRunner().invoke(main, command))
    assert f"no Kubernetes credentials: KUBECONFIG={tmp_path / 'kc'} is not a kubeconfig " \
        f"({why}" in err


def test_submit_sends_what_render_prints(api: FakeApiServer) -> None:
    """`submit` is `backend.submit(render(spec))`: one spec, one text, both paths."""
    spec = cases.k8s("pytorchjob")["zero2-2x4"]
    (job,) = [d for d in yaml.safe_load_all(render(spec)) if d]
    name = spec.job_name
    api.on("POST", f"{PTJ}/namespaces/default/pytorchjobs", created(job))
    from mgft.backends.k8s import submit as k8s

    assert k8s.submit(spec) == 0
    assert api.requests[-2].body == job and api.requests[2].path.endswith(f"/{name}")
