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
from mgft.cli import main
from mgft.render import render

from tests.launcher.backends.fake_apiserver import (
    FakeApiServer,
    api_resources,
    not_found,
    status_body,
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


def test_creates_companions_then_the_job_exactly_as_rendered(api: FakeApiServer) -> None:
    extra = ("--namespace", "ml", "--config-map", "--pvc-size", "100Gi")
    config_map, claim, job = rendered(*extra)
    base = f"{PTJ}/namespaces/ml/pytorchjobs"
    api.on("POST", "/api/v1/namespaces/ml/configmaps", created(config_map))
    api.on("POST", "/api/v1/namespaces/ml/persistentvolumeclaims", created(claim))
    api.on("POST", base, created(job))
    api.on("PATCH", "/api/v1/namespaces/ml/configmaps/ft-1-config", (200, config_map))
    result = submit(*extra)
    assert result.exit_code == 0, result.output
    assert api.calls() == [
        ("GET", PTJ),  # the operator's API (discovery), before anything is created
        ("GET", "/api/v1/namespaces/ml"),
        ("GET", f"{base}/ft-1"),  # no job of that name yet (404)
        ("POST", "/api/v1/namespaces/ml/configmaps"),
        ("POST", "/api/v1/namespaces/ml/persistentvolumeclaims"),
        ("POST", base),
        ("PATCH", "/api/v1/namespaces/ml/configmaps/ft-1-config"),
    ]
    posts = [r.body for r in api.requests if r.method == "POST"]
    assert posts == [config_map, claim, job], "the submitted objects are the rendered ones"
    patch = api.requests[-1]
    assert patch.body == {"metadata": {"ownerReferences": [
        {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "ft-1",
         "uid": "1f5c-uid"}]}}
    assert patch.content_type and "merge-patch+json" in patch.content_type
    assert "created pytorchjobs.kubeflow.org/ft-1 in namespace ml" in result.stdout
    assert "mgft logs -f ft-1 --backend k8s --namespace ml" in result.stdout


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


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("mgft: error: ") and result.stderr.count("\n") == 1
    return result.stderr


@pytest.mark.parametrize("discovery", [
    not_found("the server could not find the requested resource"),
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
                               ("POST", f"{PTJ}/namespaces/default/pytorchjobs")]
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
    err = one_line_error(submit(*extra))
    assert "ConfigMap ft-1-config already exists in namespace default and is not this job's" in err
    assert not [r for r in api.requests if r.method in ("PUT", "PATCH")]
    assert ("POST", f"{PTJ}/namespaces/default/pytorchjobs") not in api.calls()


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
    assert "no Kubernetes credentials" in err and "KUBECONFIG" in err


def test_submit_sends_what_render_prints(api: FakeApiServer) -> None:
    """`submit` is `backend.submit(render(spec))`: one spec, one text, both paths."""
    spec = cases.k8s("pytorchjob")["zero2-2x4"]
    (job,) = [d for d in yaml.safe_load_all(render(spec)) if d]
    name = spec.job_name
    api.on("POST", f"{PTJ}/namespaces/default/pytorchjobs", created(job))
    from mgft.backends import k8s

    assert k8s.submit(spec) == 0
    assert api.requests[-1].body == job and api.requests[2].path.endswith(f"/{name}")
