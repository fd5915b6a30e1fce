"""Submission to Kubernetes: exactly the objects `mgft render` prints, created through the
official client (`pip install 'mgft[k8s]'`), from the kubeconfig or the pod's service account.

Before creating anything: the operator's API exists, the namespace exists, and no job of that
name does (unless --replace). Then the job first, and its companions after it, so that the
ConfigMap is created already owned by the job (ownerReferences: it goes when the job goes, and
no patch or update rights are needed). The claim is never owned: it holds outputs.

A submit is all or nothing: when a create fails (RBAC, quota, a conflict) or is interrupted,
what this submit created is deleted again (a claim that was there before is never touched),
and the error says what was left, if anything. The job is created with strict field
validation (an operator too old for a field mgft sets refuses it instead of losing the field),
and after a PyTorchJob, one warning line if API discovery shows the cluster serves TrainJob too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import yaml

from mgft.backends.k8s import manage as k8s_manage
from mgft.backends.k8s.api import (
    BY_KIND,
    KINDS,
    ApiFailure,
    Cluster,
    Kind,
    get_job,
    require_operator,
    serves,
)
from mgft.backends.query import JobQuery
from mgft.spec.errors import SubmitError
from mgft.spec.job import JobSpec, K8sApi

REPLACE_WAIT_S = 120.0
# Upstream keeps training-operator v1 only on its release-1.9 branch, and Kueue ships with its
# kubeflow.org/pytorchjob integration commented out (trainer.kubeflow.org/trainjob is on).
FROZEN_V1 = ("this cluster also serves TrainJob (Kubeflow Trainer v2); PyTorchJob "
             "(training-operator v1) is frozen upstream and Kueue leaves its v1 integration off "
             "by default: prefer --k8s-api trainjob")


def submit(spec: JobSpec, *, replace: bool = False) -> int:
    from mgft.render import render

    return submit_rendered(render(spec), replace=replace)


def submit_rendered(text: str, *, replace: bool = False) -> int:
    """Create the objects in `text` (the job first, then its companions) and say how to
    follow; on a failure, delete what was created and say so."""
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
    made = _Created(cluster, namespace)
    try:
        created = _create_job(cluster, kind, namespace, name, job)
        made.add(f"{kind.plural}.{kind.group}", name, lambda: cluster.call(
            f"deleting {kind.kind} {namespace}/{name}",
            cluster.custom.delete_namespaced_custom_object, kind.group, kind.version, namespace,
            kind.plural, name, body={"propagationPolicy": "Background"}))
        notes = [_create_companion(cluster, doc, created, made) for doc in companions]
    except SubmitError as err:
        raise SubmitError(f"{err}; {made.undo()}") from None
    except KeyboardInterrupt:
        raise SubmitError(f"interrupted while creating {kind.kind} {namespace}/{name} and its "
                          f"companions; {made.undo()}") from None
    if kind.api is K8sApi.PYTORCHJOB and _serves_quietly(cluster, KINDS[K8sApi.TRAINJOB]):
        print(f"mgft: warning: {FROZEN_V1}", file=sys.stderr)
    print(f"created {kind.plural}.{kind.group}/{name} in namespace {namespace}")
    for note in notes:
        print(f"  {note}")
    where = f" --namespace {namespace}" if namespace != "default" else ""
    print(f"follow it:  mgft logs -f {name} --backend k8s{where}")
    print(f"status:     mgft status {name} --backend k8s{where}")
    print(f"cancel:     mgft cancel {name} --backend k8s{where}")
    return 0


class _Created:
    """What this submit has created so far, to delete again (newest first) if it fails."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.objects: list[tuple[str, str, Callable[[], object]]] = []

    def add(self, resource: str, name: str, delete: Callable[[], object]) -> None:
        self.objects.append((resource, name, delete))

    def undo(self) -> str:
        if not self.objects:
            return "nothing was created"
        deleted, left = [], []
        for resource, name, delete in reversed(self.objects):
            try:
                delete()
            except ApiFailure as err:
                if err.status != 404:  # already gone counts as deleted
                    left.append((f"{resource}/{name}", err.why))
                    continue
            except SubmitError as err:
                left.append((f"{resource}/{name}", str(err)))
                continue
            deleted.append(f"{resource}/{name}")
        if not left:
            return f"nothing was left behind (deleted {', '.join(deleted)}, created by this " \
                   "submit)"
        names = " ".join(what for what, _ in left)
        why = "; ".join(f"{what}: {reason}" for what, reason in left)
        return (f"left behind: {', '.join(what for what, _ in left)} (could not delete: {why}); "
                f"delete with `kubectl delete -n {self.namespace} {names}`")


def _cluster() -> Cluster:
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        raise SubmitError("the kubernetes client is not installed; "
                          "pip install 'mgft[k8s]'") from None
    return Cluster()


def _create_job(cluster: Cluster, kind: Kind, namespace: str, name: str,
                job: dict[str, Any]) -> dict[str, Any]:
    """Strict field validation: an operator whose CRD lacks a field mgft sets refuses the job
    instead of the API server dropping the field (a Trainer before v2.2 has no runtimePatches,
    and would run the pods with no /dev/shm, claim or security context)."""
    doing = f"creating {kind.kind} {namespace}/{name}"
    try:
        return cluster.call(doing, cluster.custom.create_namespaced_custom_object, kind.group,
                            kind.version, namespace, kind.plural, job,
                            field_validation="Strict")
    except ApiFailure as err:
        if err.status == 400 and 'unknown field "spec.runtimePatches"' in err.why:
            raise SubmitError(
                f"{doing}: this cluster's Kubeflow Trainer has no runtimePatches (it is older "
                "than v2.2); mgft's TrainJob needs Trainer v2.3 or later: upgrade it "
                f"({kind.install}), or use --k8s-api pytorchjob") from None
        raise


def _serves_quietly(cluster: Cluster, kind: Kind) -> bool:
    """Discovery for advice only: any failure means no advice, never a failed submit."""
    try:
        return serves(cluster, kind)
    except SubmitError:
        return False


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


def _create_companion(cluster: Cluster, doc: dict[str, Any], job: dict[str, Any],
                      made: _Created) -> str:
    """Create one of the job's companions; a ConfigMap owned by `job` (the created object)."""
    name, namespace = doc["metadata"]["name"], doc["metadata"]["namespace"]
    claim = doc["kind"] == "PersistentVolumeClaim"
    if not claim:
        doc = _owned(doc, job)
    create = {"ConfigMap": cluster.core.create_namespaced_config_map,
              "PersistentVolumeClaim": cluster.core.create_namespaced_persistent_volume_claim}
    delete = {"ConfigMap": cluster.core.delete_namespaced_config_map,
              "PersistentVolumeClaim": cluster.core.delete_namespaced_persistent_volume_claim}
    doing = f"creating {doc['kind']} {namespace}/{name}"
    try:
        cluster.call(doing, create[doc["kind"]], namespace, doc)
    except ApiFailure as err:
        if err.status != 409:
            raise
        if claim:
            return f"claim {name}: already there, used as it is and kept"
        existing = cluster.call(f"reading ConfigMap {namespace}/{name}",
                                cluster.core.read_namespaced_config_map, name, namespace)
        if (existing.metadata.labels or {}).get("mgft.dev/job") != job["metadata"]["name"]:
            raise SubmitError(f"ConfigMap {name} already exists in namespace {namespace} and "
                              "is not this job's; choose another --name") from None
        # An earlier submit's, left by an older mgft: now this job's, and goes with it.
        cluster.call(f"replacing ConfigMap {namespace}/{name}",
                     cluster.core.replace_namespaced_config_map, name, namespace, doc)
        return f"ConfigMap {name}: an earlier one of this name replaced; owned by the job, " \
               "deleted with it"
    resource = "persistentvolumeclaim" if claim else "configmap"
    made.add(resource, name, lambda: cluster.call(
        f"deleting {doc['kind']} {namespace}/{name}", delete[doc["kind"]], name, namespace))
    if claim:
        return f"claim {name}: created; kept after the job (it holds the outputs)"
    return f"ConfigMap {name}: created, owned by the job (deleted with it)"


def _owned(doc: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """`doc` with `job` as its owner, for the garbage collector."""
    meta = job["metadata"]
    owner = {"apiVersion": job["apiVersion"], "kind": job["kind"], "name": meta["name"],
             "uid": meta["uid"]}
    return {**doc, "metadata": {**doc["metadata"], "ownerReferences": [owner]}}


def status(query: JobQuery) -> int:
    return k8s_manage.status(_cluster(), query)


def logs(query: JobQuery) -> int:
    return k8s_manage.logs(_cluster(), query)


def cancel(query: JobQuery) -> int:
    return k8s_manage.cancel(_cluster(), query)


def list_jobs(query: JobQuery) -> int:
    return k8s_manage.list_jobs(_cluster(), query)
