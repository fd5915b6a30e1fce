"""What happens to a submitted job on a cluster, re-implemented for tests, since no API server
runs here: the pods the Kubeflow operators create from it, the environment and init container
they add, and how the kubelet resolves env values and command words.

Sources, kept as close to line-by-line as Python allows:
- training-operator v1.9.x `pkg/controller.v1/pytorch/envvar.go`, `master.go`, `elastic.go`,
  `initcontainer.go`;
- Trainer v2.3 `pkg/runtime/framework/plugins/torch/torch.go` (PET_* upserted into the
  container named "node"), JobSet (pod hostname `<job>-node-0-<i>`, subdomain `<job>`) and the
  Job controller's JOB_COMPLETION_INDEX;
- Kubernetes `third_party/forked/golang/expansion/expand.go` for `$(VAR)` expansion.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

V1_DEFAULT_PORT = 23456  # kubeflowv1.PyTorchJobDefaultPort, port name "pytorchjob-port"
V2_PORT = 29500  # constants.ContainerTrainerPort
# training-operator v1.9 initcontainer.go default template (image alpine:3.10, 100 tries).
V1_INIT_CONTAINER = {
    "name": "init-pytorch",
    "image": "alpine:3.10",
    "imagePullPolicy": "IfNotPresent",
    "resources": {"limits": {"cpu": "100m", "memory": "20Mi"},
                  "requests": {"cpu": "50m", "memory": "10Mi"}},
    "command": ["sh", "-c", "err=1;for i in $(seq 100); do if nslookup {master}; then err=0 && "
                "break; fi;echo waiting for master; sleep 2; done; exit $err"],
}
# The same with a restricted securityContext: what Kubeflow's own manifests install with the
# operator flag --pytorch-init-container-template-file for namespaces that enforce it.
V1_RESTRICTED_INIT_SECURITY = {
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}


@dataclass
class OperatorPod:
    """One pod as the operator creates it."""

    name: str
    hostname: str
    node_rank: int | None  # what the operator says; None when torch assigns it (elastic)
    spec: dict[str, Any]  # the pod spec after the operator's changes
    container: str  # the trainer container's name
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def trainer(self) -> dict[str, Any]:
        return next(c for c in self.spec["containers"] if c["name"] == self.container)

    def as_pod(self, namespace: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": self.name, "namespace": namespace, "labels": self.labels},
                "spec": self.spec}


@dataclass
class Cluster:
    """The pods of one job and the DNS names its Services give them."""

    pods: list[OperatorPod]
    service_names: list[str]  # in pod order


def _env(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


def _v1_port(replicas: dict[str, Any], rtype: str) -> int:
    for c in replicas[rtype]["template"]["spec"]["containers"]:
        if c["name"] == "pytorch":
            for port in c.get("ports", []):
                if port.get("name") == "pytorchjob-port":
                    return int(port["containerPort"])
    return V1_DEFAULT_PORT  # the operator's defaulter adds this port when none is named


def pytorchjob(doc: dict[str, Any], restricted_init_template: bool = False) -> Cluster:
    """training-operator v1: Master-0 and Worker-i pods, one Service each, env per envvar.go."""
    job, spec = doc["metadata"]["name"], doc["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    has_master = "Master" in replicas
    total = sum(r.get("replicas", 1) for r in replicas.values())
    nproc = spec.get("nprocPerNode", "auto")
    nproc_int = int(nproc) if nproc.isdigit() else 1
    elastic = spec.get("elasticPolicy")
    pods, services = [], []
    for rtype in ("Master", "Worker"):
        if rtype not in replicas:
            continue
        template = replicas[rtype]["template"]
        for index in range(replicas[rtype].get("replicas", 1)):
            name = f"{job}-{rtype.lower()}-{index}"
            pod_spec = copy.deepcopy(template["spec"])
            rank = index + 1 if rtype == "Worker" else index
            for c in pod_spec["containers"]:
                env = c.setdefault("env", [])
                env.append(_env("PYTHONUNBUFFERED", "1"))
                if has_master:
                    master, port = f"{job}-master-0", str(_v1_port(replicas, "Master"))
                    env += [_env("MASTER_PORT", port), _env("MASTER_ADDR", master),
                            _env("PET_MASTER_PORT", port), _env("PET_MASTER_ADDR", master),
                            _env("WORLD_SIZE", str(total * nproc_int)), _env("RANK", str(rank)),
                            _env("PET_NODE_RANK", str(rank))]
                env.append(_env("PET_NPROC_PER_NODE", nproc))
                if elastic is not None:
                    env += _v1_elastic_env(job, elastic, replicas)
                else:
                    env.append(_env("PET_NNODES", str(total)))
            if has_master and rtype == "Worker":
                init = copy.deepcopy(V1_INIT_CONTAINER)
                init["command"][2] = init["command"][2].format(master=f"{job}-master-0")
                if restricted_init_template:
                    init["securityContext"] = dict(V1_RESTRICTED_INIT_SECURITY)
                pod_spec.setdefault("initContainers", []).append(init)
            labels = dict(template.get("metadata", {}).get("labels", {})) | {
                "training.kubeflow.org/job-name": job,
                "training.kubeflow.org/operator-name": "pytorchjob-controller",
                "training.kubeflow.org/replica-type": rtype.lower(),
                "training.kubeflow.org/replica-index": str(index)}
            pods.append(OperatorPod(name=name, hostname=name,
                                    node_rank=None if elastic else rank, spec=pod_spec,
                                    container="pytorch", labels=labels))
            services.append(name)
    return Cluster(pods=pods, service_names=services)


def _v1_elastic_env(job: str, policy: dict[str, Any],
                    replicas: dict[str, Any]) -> list[dict[str, str]]:
    host = policy.get("rdzvHost", f"{job}-worker-0")
    port = policy.get("rdzvPort", _v1_port(replicas, "Worker"))
    env = [_env("PET_RDZV_ENDPOINT", f"{host}:{port}"),
           _env("PET_RDZV_BACKEND", policy.get("rdzvBackend", "c10d"))]
    if "minReplicas" in policy and "maxReplicas" in policy:
        env.append(_env("PET_NNODES", f"{policy['minReplicas']}:{policy['maxReplicas']}"))
    else:
        env.append(_env("PET_NNODES", str(replicas["Worker"]["replicas"])))
    if "maxRestarts" in policy:
        env.append(_env("PET_MAX_RESTARTS", str(policy["maxRestarts"])))
    if "rdzvId" in policy:
        env.append(_env("PET_RDZV_ID", policy["rdzvId"]))
    return env


def _upsert(env: list[dict[str, Any]], entry: dict[str, Any]) -> None:
    for i, old in enumerate(env):
        if old["name"] == entry["name"]:
            env[i] = entry
            return
    env.append(entry)


def _merge_named(base: list[dict[str, Any]], patch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Strategic-merge of a list keyed by name (containers, volumes)."""
    out = [copy.deepcopy(b) for b in base]
    for item in patch:
        target = next((o for o in out if o["name"] == item["name"]), None)
        if target is None:
            out.append(copy.deepcopy(item))
            continue
        for key, value in item.items():
            if key in ("volumeMounts", "env") and key in target:
                target[key] = _merge_named(target[key], value)
            else:
                target[key] = copy.deepcopy(value)
    return out


def trainjob(doc: dict[str, Any], runtime: dict[str, Any]) -> Cluster:
    """Trainer v2: a JobSet with replicated job "node"; PET_* upserted into container "node"."""
    job, spec = doc["metadata"]["name"], doc["spec"]
    trainer = spec["trainer"]
    (rjob,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    pod_template = copy.deepcopy(rjob["template"]["spec"]["template"])
    for patch in spec.get("runtimePatches", []):
        for prjob in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            if prjob["name"] != rjob["name"]:
                continue
            ptemplate = prjob["template"]["spec"]["template"]
            meta = pod_template.setdefault("metadata", {})
            meta.setdefault("labels", {}).update(ptemplate.get("metadata", {}).get("labels", {}))
            for key, value in ptemplate.get("spec", {}).items():
                if key in ("containers", "initContainers", "volumes"):
                    pod_template["spec"][key] = _merge_named(pod_template["spec"].get(key, []),
                                                             value)
                else:
                    pod_template["spec"][key] = copy.deepcopy(value)
    nodes = trainer.get("numNodes", runtime["spec"]["mlPolicy"].get("numNodes", 1))
    nproc = str(trainer.get("numProcPerNode", "auto"))
    pods, services = [], []
    for index in range(nodes):
        hostname = f"{job}-{rjob['name']}-0-{index}"
        pod_spec = copy.deepcopy(pod_template["spec"])
        node = next(c for c in pod_spec["containers"] if c["name"] == "node")
        for key in ("image", "command", "args"):
            if key in trainer:
                node[key] = copy.deepcopy(trainer[key])
        if "resourcesPerNode" in trainer:
            node["resources"] = copy.deepcopy(trainer["resourcesPerNode"])
        env = node.setdefault("env", [])
        for entry in trainer.get("env", []):
            _upsert(env, copy.deepcopy(entry))
        for entry in (_env("PET_NNODES", str(nodes)), _env("PET_NPROC_PER_NODE", nproc),
                      _env("PET_NODE_RANK", str(index)),  # fieldRef: job-completion-index
                      _env("PET_MASTER_ADDR", f"{job}-{rjob['name']}-0-0.{job}"),
                      _env("PET_MASTER_PORT", str(V2_PORT))):
            _upsert(env, entry)
        node.setdefault("ports", []).append({"containerPort": V2_PORT})
        # Indexed Jobs: the Job controller adds the completion index to every container.
        for c in pod_spec["containers"]:
            c.setdefault("env", []).append(_env("JOB_COMPLETION_INDEX", str(index)))
        pod_spec["restartPolicy"] = pod_spec.get("restartPolicy", "OnFailure")
        pod_spec["hostname"], pod_spec["subdomain"] = hostname, job
        labels = dict(pod_template.get("metadata", {}).get("labels", {})) | {
            "jobset.sigs.k8s.io/jobset-name": job,
            "jobset.sigs.k8s.io/replicatedjob-name": rjob["name"],
            "batch.kubernetes.io/job-completion-index": str(index)}
        pods.append(OperatorPod(name=f"{hostname}-x7k2p", hostname=hostname, node_rank=index,
                                spec=pod_spec, container="node", labels=labels))
        services.append(f"{hostname}.{job}")
    return Cluster(pods=pods, service_names=services)


def kubelet_expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes' `$(VAR)` expansion of env values and command words, byte for byte."""
    data, out = text.encode(), bytearray()
    checkpoint, cursor = 0, 0
    while cursor < len(data):
        if data[cursor:cursor + 1] == b"$" and cursor + 1 < len(data):
            out += data[checkpoint:cursor]
            rest = data[cursor + 1:]
            if rest[:1] == b"$":
                out += b"$"
                advance = 1
            elif rest[:1] == b"(":
                close = rest.find(b")", 1)
                if close == -1:
                    out += b"$("
                    advance = 1
                else:
                    name = rest[1:close].decode()
                    value = lookup(name)
                    out += (value if value is not None else f"$({name})").encode()
                    advance = close + 1
            else:
                out += b"$" + rest[:1]
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return (out + data[checkpoint:]).decode()


def container_env(container: dict[str, Any], secrets: Mapping[str, Mapping[str, str]],
                  ) -> dict[str, str]:
    """The environment the kubelet gives the process: entries in order, later names win,
    `$(VAR)` refers to earlier entries, secretKeyRef read from `secrets`."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[ref["name"]][ref["key"]]
        else:
            env[entry["name"]] = kubelet_expand(entry.get("value", ""), env.get)
    return env


def container_command(container: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    words = [*container.get("command", []), *container.get("args", [])]
    return [kubelet_expand(w, env.get) for w in words]
