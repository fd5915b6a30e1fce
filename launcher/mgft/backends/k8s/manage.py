"""`mgft status|logs|cancel|list` for Kubeflow jobs. Pods are found by the operator's own labels
(`training.kubeflow.org/job-name` for v1, `jobset.sigs.k8s.io/jobset-name` for Trainer v2) and
ordered by node rank, so `--rank N` means the same pod under either API.

A pod that has not started yet (the normal state of a GPU job waiting for nodes) has no log:
the API server answers 204 for an unscheduled pod and 400 for a container still being
created, so `logs` looks at the pod first and says why it is waiting, and `logs -f` waits for
it to start, looking again after 1, 2, 4 ... at most 10 s, until it runs or Ctrl-C.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from mgft.backends.k8s.api import KINDS, ApiFailure, Cluster, Kind, get_job
from mgft.backends.query import JobQuery
from mgft.spec.errors import SubmitError
from mgft.spec.job import K8sApi

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
WAIT_POLL_S = (1.0, 10.0)  # logs -f on a pod not started yet: first and longest pause
CANCEL_WAIT_S = 90  # as long as the Slurm backend waits for a cancelled job
CANCEL_POLL_S = 1.0
ENDED = ("Succeeded", "Failed", "Complete")  # job conditions after which no pod will start
POD_ENDED = ("Succeeded", "Failed")  # pod phases


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


def _pods(cluster: Cluster, kind: Kind, namespace: str, name: str) -> list[Any]:
    return cluster.call(f"listing the pods of {kind.kind} {name}",
                        cluster.core.list_namespaced_pod, namespace,
                        label_selector=f"{kind.pod_label}={name}").items


def job_pods(cluster: Cluster, kind: Kind, job: dict[str, Any],
             namespace: str) -> list[tuple[int, Any]]:
    pods = _pods(cluster, kind, namespace, job["metadata"]["name"])
    return sorted(((node_rank(kind, job, p), p) for p in pods),
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


def _trainer(kind: Kind, pod: Any) -> Any:
    """The trainer container's status in `pod`, None before the kubelet reports one."""
    return next((s for s in pod.status.container_statuses or [] if s.name == kind.container),
                None)


def started(kind: Kind, pod: Any) -> bool:
    """Whether the trainer container has run, so that the pod has a log to read."""
    status = _trainer(kind, pod)
    if status is None:
        return False
    ran = status.state and (status.state.running or status.state.terminated)
    return bool(ran or (status.last_state and status.last_state.terminated)
                or status.restart_count)


def waiting_for(kind: Kind, pod: Any) -> str:
    """Why `pod` has not started, as its conditions and container statuses say."""
    phase = pod.status.phase or "Pending"
    why = next((f"{c.reason}: {c.message}" if c.message else str(c.reason)
                for c in pod.status.conditions or []
                if c.type == "PodScheduled" and c.status == "False" and c.reason), None)
    for status in (pod.status.init_container_statuses or []) + [_trainer(kind, pod)]:
        if why or status is None or not status.state:
            continue
        if status.state.waiting and status.state.waiting.reason:
            waiting = status.state.waiting
            why = f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason
        elif status.state.running and status.name != kind.container:
            why = f"init container {status.name} is running"
    return f"pod {pod.metadata.name} is {phase}" + (f" ({why.rstrip('.')})" if why else "")


def logs(cluster: Cluster, query: JobQuery) -> int:
    kind, job = find_job(cluster, query)
    rank = 0 if query.rank is None else query.rank  # the master's pod by default
    try:
        pod = _pod_of_rank(cluster, kind, job, query.namespace, rank, wait=query.follow)
        if not query.follow:
            if not started(kind, pod):
                later = "it ended before its trainer started, so there is no log" if \
                    pod.status.phase in POD_ENDED else "no log yet (`mgft logs -f` waits for it)"
                print(f"mgft: {waiting_for(kind, pod)}; {later}", file=sys.stderr)
                return 0
            text = cluster.call(f"reading the log of pod {pod.metadata.name}",
                                cluster.core.read_namespaced_pod_log, pod.metadata.name,
                                query.namespace, container=kind.container)
            sys.stdout.write(text or "")  # None: 204 No Content, the pod has gone unscheduled
            return 0
        _follow(cluster, kind, pod, query.namespace)
    except KeyboardInterrupt:
        return 130
    return 0


def _pod_of_rank(cluster: Cluster, kind: Kind, job: dict[str, Any], namespace: str,
                 rank: int, *, wait: bool) -> Any:
    """The pod of node `rank`; with `wait`, once its trainer has started (or it has ended)."""
    name, pause, said = job["metadata"]["name"], WAIT_POLL_S[0], ""
    while True:
        pods = dict(job_pods(cluster, kind, job, namespace))
        pod = pods.get(rank)
        if pod is None and (pods or not wait):
            have = ", ".join(str(r) for r in sorted(pods)) or "none yet"
            raise SubmitError(f"--rank {rank}: {kind.kind} {name} has no pod of that node "
                              f"rank (pods for ranks: {have})")
        if pod is not None and (not wait or started(kind, pod)):
            return pod
        if pod is not None and pod.status.phase in POD_ENDED:
            raise SubmitError(f"{waiting_for(kind, pod)}: it ended before its trainer "
                              f"started, so there is no log; see `mgft status {name} "
                              "--backend k8s`")
        note = waiting_for(kind, pod) if pod is not None else f"{kind.kind} {name} has no " \
            f"pods yet ({state(job)})"
        if state(job) in ENDED:
            raise SubmitError(f"{note}, and the job is {state(job)}: no log will come")
        if note != said:
            print(f"mgft: {note}; waiting for it to start (Ctrl-C to stop)", file=sys.stderr)
            said = note
        time.sleep(pause)
        pause = min(2 * pause, WAIT_POLL_S[1])
        job = get_job(cluster, kind, namespace, name) or _gone(kind, namespace, name)


def _gone(kind: Kind, namespace: str, name: str) -> dict[str, Any]:
    raise SubmitError(f"{kind.kind} {namespace}/{name} was deleted while waiting for its pod")


def _follow(cluster: Cluster, kind: Kind, pod: Any, namespace: str) -> None:
    stream = cluster.call(f"reading the log of pod {pod.metadata.name}",
                          cluster.core.read_namespaced_pod_log, pod.metadata.name, namespace,
                          container=kind.container, follow=True, _preload_content=False,
                          _request_timeout=None)
    try:
        for chunk in stream.stream(1024):
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
    finally:
        stream.release_conn()


def cancel(cluster: Cluster, query: JobQuery) -> int:
    """Delete the job, then wait (at most CANCEL_WAIT_S) until it and its pods are gone."""
    kind, job = find_job(cluster, query)
    name, namespace = job["metadata"]["name"], query.namespace
    config_maps = _config_maps(cluster, job, namespace)
    cluster.call(f"deleting {kind.kind} {namespace}/{name}",
                 cluster.custom.delete_namespaced_custom_object, kind.group, kind.version,
                 namespace, kind.plural, name, body={"propagationPolicy": "Background"})
    deadline = time.monotonic() + CANCEL_WAIT_S
    try:
        while (left := _pods(cluster, kind, namespace, name)) or get_job(
                cluster, kind, namespace, name) is not None:
            if time.monotonic() > deadline:
                print(f"mgft: {kind.kind} {namespace}/{name} deleted, but {len(left)} pod(s) "
                      f"still stopping after {CANCEL_WAIT_S} s (SIGTERM, then SIGKILL after "
                      "the pod's grace period); see `kubectl get pods -n "
                      f"{namespace} -l {kind.pod_label}={name}`", file=sys.stderr)
                return 1
            time.sleep(CANCEL_POLL_S)
    except KeyboardInterrupt:
        print(f"mgft: {kind.kind} {namespace}/{name} deleted; not waiting for its pods to stop",
              file=sys.stderr)
        return 130
    print(f"cancelled {kind.plural}.{kind.group}/{name} in namespace {namespace}: deleted, and "
          f"its pods have stopped; {config_maps}claims with outputs are kept")
    return 0


def _config_maps(cluster: Cluster, job: dict[str, Any], namespace: str) -> str:
    """What becomes of the job's ConfigMaps: owned ones go with it, others stay."""
    name, uid = job["metadata"]["name"], job["metadata"].get("uid")
    try:
        found = cluster.call(f"listing the ConfigMaps of {name}",
                             cluster.core.list_namespaced_config_map, namespace,
                             label_selector=f"mgft.dev/job={name}").items
    except ApiFailure:  # not allowed to look: say nothing about them
        return ""
    said = ""
    for config_map in found:
        owners = {o.uid for o in config_map.metadata.owner_references or []}
        cm = config_map.metadata.name
        said += (f"ConfigMap {cm} goes with it; " if uid in owners else
                 f"ConfigMap {cm} is not owned by the job and stays (`kubectl delete "
                 f"configmap {cm} -n {namespace}`); ")
    return said


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
