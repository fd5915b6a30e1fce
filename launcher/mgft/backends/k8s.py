"""Submission to Kubernetes: exactly the objects `mgft render` prints, created through the
official client (`pip install 'mgft[k8s]'`), from the kubeconfig or the pod's service account.

Before creating anything: the operator's API exists, the namespace exists, and no job of that
name does (unless --replace). Then the companions (claim, ConfigMap), then the job; the
ConfigMap is handed to the job as its owner so it goes when the job goes. The claim never is:
it holds outputs.
"""

from __future__ import annotations

import time
from typing import Any

import yaml

from mgft.backends import k8s_manage
from mgft.backends.k8s_api import BY_KIND, ApiFailure, Cluster, Kind, get_job, require_operator
from mgft.errors import SubmitError
from mgft.jobs import JobQuery
from mgft.spec import JobSpec

REPLACE_WAIT_S = 120.0


def submit(spec: JobSpec, *, replace: bool = False) -> int:
    from mgft.render import render

    return submit_rendered(render(spec), replace=replace)


def submit_rendered(text: str, *, replace: bool = False) -> int:
    """Create the objects in `text` (companions first, the job last) and say how to follow."""
    *companions, job = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    kind = BY_KIND[job["kind"]]
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    cluster = _cluster()
    require_operator(cluster, kind)
    _require_namespace(cluster, namespace)
    if get_job(cluster, kind, namespace, name) is not None:
        if not replace:
            raise SubmitError(
                f"{kind.kind} {name} already exists in namespace {namespace}; pass --replace to "
                "delete it and submit again, or choose another --name")
        _delete_and_wait(cluster, kind, namespace, name)
    for doc in companions:
        _create_companion(cluster, doc, name)
    created = cluster.call(f"creating {kind.kind} {namespace}/{name}",
                           cluster.custom.create_namespaced_custom_object, kind.group,
                           kind.version, namespace, kind.plural, job)
    for doc in companions:
        if doc["kind"] == "ConfigMap":
            _own(cluster, doc, created)
    print(f"created {kind.plural}.{kind.group}/{name} in namespace {namespace}")
    where = f" --namespace {namespace}" if namespace != "default" else ""
    print(f"follow it:  mgft logs -f {name} --backend k8s{where}")
    print(f"status:     mgft status {name} --backend k8s{where}")
    print(f"cancel:     mgft cancel {name} --backend k8s{where}")
    return 0


def _cluster() -> Cluster:
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        raise SubmitError("the kubernetes client is not installed; "
                          "pip install 'mgft[k8s]'") from None
    return Cluster()


def _require_namespace(cluster: Cluster, namespace: str) -> None:
    try:
        cluster.call(f"reading namespace {namespace}", cluster.core.read_namespace, namespace)
    except ApiFailure as err:
        if err.status == 404:
            raise SubmitError(f"namespace {namespace} does not exist; create it with "
                              f"`kubectl create namespace {namespace}` or pass another "
                              "--namespace") from None
        if err.status != 403:  # many users may not read Namespace objects; creating will tell
            raise


def _delete_and_wait(cluster: Cluster, kind: Kind, namespace: str, name: str) -> None:
    cluster.call(f"deleting {kind.kind} {namespace}/{name} (--replace)",
                 cluster.custom.delete_namespaced_custom_object, kind.group, kind.version,
                 namespace, kind.plural, name, body={"propagationPolicy": "Foreground"})
    deadline = time.monotonic() + REPLACE_WAIT_S
    while get_job(cluster, kind, namespace, name) is not None:
        if time.monotonic() > deadline:
            raise SubmitError(f"{kind.kind} {name} is still being deleted after "
                              f"{REPLACE_WAIT_S:.0f} s; try again when `mgft status {name} "
                              "--backend k8s` no longer finds it")
        time.sleep(1.0)


def _create_companion(cluster: Cluster, doc: dict[str, Any], job_name: str) -> None:
    name, namespace = doc["metadata"]["name"], doc["metadata"]["namespace"]
    create = {"ConfigMap": cluster.core.create_namespaced_config_map,
              "PersistentVolumeClaim": cluster.core.create_namespaced_persistent_volume_claim}
    doing = f"creating {doc['kind']} {namespace}/{name}"
    try:
        cluster.call(doing, create[doc["kind"]], namespace, doc)
    except ApiFailure as err:
        if err.status != 409:
            raise
        if doc["kind"] == "PersistentVolumeClaim":
            print(f"using the existing claim {name} (kept as it is)")
            return
        existing = cluster.call(f"reading ConfigMap {namespace}/{name}",
                                cluster.core.read_namespaced_config_map, name, namespace)
        if (existing.metadata.labels or {}).get("mgft.dev/job") != job_name:
            raise SubmitError(f"ConfigMap {name} already exists in namespace {namespace} and "
                              "is not this job's; choose another --name") from None
        cluster.call(f"replacing ConfigMap {namespace}/{name}",
                     cluster.core.replace_namespaced_config_map, name, namespace, doc)


def _own(cluster: Cluster, doc: dict[str, Any], job: dict[str, Any]) -> None:
    meta = job["metadata"]
    owner = {"apiVersion": job["apiVersion"], "kind": job["kind"], "name": meta["name"],
             "uid": meta["uid"]}
    cluster.call(f"handing ConfigMap {doc['metadata']['name']} to the job",
                 cluster.core.patch_namespaced_config_map, doc["metadata"]["name"],
                 doc["metadata"]["namespace"], {"metadata": {"ownerReferences": [owner]}})


def status(query: JobQuery) -> int:
    return k8s_manage.status(_cluster(), query)


def logs(query: JobQuery) -> int:
    return k8s_manage.logs(_cluster(), query)


def cancel(query: JobQuery) -> int:
    return k8s_manage.cancel(_cluster(), query)


def list_jobs(query: JobQuery) -> int:
    return k8s_manage.list_jobs(_cluster(), query)
