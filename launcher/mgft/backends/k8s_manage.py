"""`mgft status|logs|cancel|list` for Kubeflow jobs. Pods are found by the operator's own labels
(`training.kubeflow.org/job-name` for v1, `jobset.sigs.k8s.io/jobset-name` for Trainer v2) and
ordered by node rank, so `--rank N` means the same pod under either API."""

from __future__ import annotations

import sys
from typing import Any

from mgft.backends.k8s_api import KINDS, ApiFailure, Cluster, Kind, get_job
from mgft.errors import SubmitError
from mgft.jobs import JobQuery
from mgft.spec import K8sApi

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def find_job(cluster: Cluster, query: JobQuery) -> tuple[Kind, dict[str, Any]]:
    assert query.name is not None
    kinds = [KINDS[query.api]] if query.api else list(KINDS.values())
    for kind in kinds:
        try:
            job = get_job(cluster, kind, query.namespace, query.name)
        except ApiFailure as err:
            if err.status == 404:  # that API is not served: look at the next one
                continue
            raise
        if job is not None:
            return kind, job
    looked = " or ".join(k.kind for k in kinds)
    raise SubmitError(f"no {looked} named {query.name} in namespace {query.namespace}; "
                      f"see `mgft list --backend k8s --namespace {query.namespace}`")


def node_rank(kind: Kind, job: dict[str, Any], pod: Any) -> int:
    """The node rank the operator gave this pod (-1 when it does not say)."""
    meta = pod.metadata
    labels, annotations = meta.labels or {}, meta.annotations or {}
    if kind.api is K8sApi.TRAINJOB:
        index = labels.get(COMPLETION_INDEX, annotations.get(COMPLETION_INDEX))
        return int(index) if index is not None else -1
    index = int(labels.get("training.kubeflow.org/replica-index", "-1"))
    # v1 numbers workers after the master, unless the job is elastic (workers only).
    has_master = "Master" in job["spec"].get("pytorchReplicaSpecs", {})
    worker = labels.get("training.kubeflow.org/replica-type") == "worker"
    return index + 1 if worker and has_master else index


def job_pods(cluster: Cluster, kind: Kind, job: dict[str, Any],
             namespace: str) -> list[tuple[int, Any]]:
    name = job["metadata"]["name"]
    pods = cluster.call(f"listing the pods of {kind.kind} {name}",
                        cluster.core.list_namespaced_pod, namespace,
                        label_selector=f"{kind.pod_label}={name}")
    return sorted(((node_rank(kind, job, p), p) for p in pods.items),
                  key=lambda item: (item[0], item[1].metadata.name))


def state(job: dict[str, Any]) -> str:
    """The latest condition that holds, as both operators report it."""
    conditions = job.get("status", {}).get("conditions") or []
    true = [c for c in conditions if c.get("status") == "True"]
    return true[-1]["type"] if true else "Pending"


def _pod_line(rank: int, pod: Any) -> str:
    statuses = pod.status.container_statuses or []
    restarts = sum(s.restart_count or 0 for s in statuses)
    waiting = [s.state.waiting.reason for s in statuses
               if s.state and s.state.waiting and s.state.waiting.reason]
    detail = f" ({', '.join(waiting)})" if waiting else ""
    return f"  node {rank:<3} {pod.metadata.name:<48} {pod.status.phase}{detail}  " \
           f"restarts {restarts}"


def status(cluster: Cluster, query: JobQuery) -> int:
    kind, job = find_job(cluster, query)
    name = job["metadata"]["name"]
    print(f"{kind.kind} {query.namespace}/{name}: {state(job)}")
    for cond in job.get("status", {}).get("conditions") or []:
        message = f"  {cond.get('message')}" if cond.get("message") else ""
        print(f"  {cond.get('type'):<12} {cond.get('status'):<6} "
              f"{cond.get('lastTransitionTime', '')}{message}")
    pods = job_pods(cluster, kind, job, query.namespace)
    print("pods:" if pods else "pods: none yet")
    for rank, pod in pods:
        print(_pod_line(rank, pod))
    return 0


def logs(cluster: Cluster, query: JobQuery) -> int:
    kind, job = find_job(cluster, query)
    name = job["metadata"]["name"]
    pods = dict(job_pods(cluster, kind, job, query.namespace))
    rank = 0 if query.rank is None else query.rank  # the master's pod by default
    if rank not in pods:
        have = ", ".join(str(r) for r in sorted(pods)) or "none yet"
        raise SubmitError(f"--rank {rank}: {kind.kind} {name} has no pod of that node "
                          f"rank (pods for ranks: {have})")
    pod = pods[rank].metadata.name
    doing = f"reading the log of pod {pod}"
    if not query.follow:
        text = cluster.call(doing, cluster.core.read_namespaced_pod_log, pod, query.namespace,
                            container=kind.container)
        sys.stdout.write(text)
        return 0
    stream = cluster.call(doing, cluster.core.read_namespaced_pod_log, pod, query.namespace,
                          container=kind.container, follow=True, _preload_content=False,
                          _request_timeout=None)
    try:
        for chunk in stream.stream(1024):
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        stream.release_conn()
    return 0


def cancel(cluster: Cluster, query: JobQuery) -> int:
    kind, job = find_job(cluster, query)
    name = job["metadata"]["name"]
    cluster.call(f"deleting {kind.kind} {query.namespace}/{name}",
                 cluster.custom.delete_namespaced_custom_object, kind.group, kind.version,
                 query.namespace, kind.plural, name, body={"propagationPolicy": "Background"})
    print(f"deleted {kind.plural}.{kind.group}/{name} in namespace {query.namespace}; its pods "
          "and ConfigMap go with it, claims with outputs are kept")
    return 0


def list_jobs(cluster: Cluster, query: JobQuery) -> int:
    kinds = [KINDS[query.api]] if query.api else list(KINDS.values())
    rows = []
    for kind in kinds:
        try:
            found = cluster.call(f"listing {kind.plural}",
                                 cluster.custom.list_namespaced_custom_object, kind.group,
                                 kind.version, query.namespace, kind.plural,
                                 label_selector="app.kubernetes.io/name=mgft")
        except ApiFailure as err:
            if err.status == 404:  # that operator is not installed
                continue
            raise
        rows += [(j["metadata"]["name"], kind.kind, state(j),
                  j["metadata"].get("creationTimestamp", "")) for j in found.get("items", [])]
    if not rows:
        print(f"no mgft jobs in namespace {query.namespace}")
        return 0
    print(f"{'NAME':<48} {'KIND':<10} {'STATE':<10} CREATED")
    for row in sorted(rows):
        print(f"{row[0]:<48} {row[1]:<10} {row[2]:<10} {row[3]}")
    return 0
