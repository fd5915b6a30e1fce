"""Validate rendered Kubeflow objects with no API server: the real CRD schemas in strict mode,
plus the admission-webhook rules the CRD schema cannot express (training-operator v1.9.4)."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import KUBEFLOW

CRDS = KUBEFLOW / "crds"
PYTORCHJOB_CRD = CRDS / "kubeflow.org_pytorchjobs.v1.9.4.yaml"
TRAINJOB_CRD = CRDS / "trainer.kubeflow.org_trainjobs.v2.3.0.yaml"
# Every Trainer v2 TrainJob schema at hand, oldest first: v2.3.0 and the newest files found
# (main at 2026-08-21, after v2.3.0; v2.4.0's own files were not found).
TRAINJOB_CRDS = {"v2.3.0": TRAINJOB_CRD,
                 "main-2026-08-21": CRDS / "trainer.kubeflow.org_trainjobs.master-2026-08-21.yaml"}
needs_crds = pytest.mark.skipif(
    not (PYTORCHJOB_CRD.is_file() and TRAINJOB_CRD.is_file()),
    reason=f"Kubeflow CRD schemas not found under {CRDS}: `bash .ci/fetch-kubeflow-crds.sh` "
    "downloads them there (or set MGFT_KUBEFLOW_DIR to a directory holding crds/)")
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _strict(node: Any) -> Any:
    """OpenAPI v3 (structural CRD schema) -> JSON Schema that rejects unknown fields,
    as the API server does with strict field validation."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def strict_schema(crd_file: Path) -> dict[str, Any]:
    crd = yaml.safe_load(crd_file.read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))


def schema_errors(doc: dict[str, Any], crd_file: Path) -> list[str]:
    validator = jsonschema.Draft7Validator(strict_schema(crd_file))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)]


def pytorchjob_webhook_errors(doc: dict[str, Any]) -> list[str]:
    """training-operator v1.9.4 pkg/webhooks/pytorch, rule by rule."""
    errors = []
    name = doc["metadata"]["name"]
    if len(name) > 63 or not DNS1035.match(name):
        errors.append(f"metadata.name {name!r} is not a DNS-1035 label")
    spec = doc["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    if set(replicas) - {"Master", "Worker"}:
        errors.append(f"replica types must be Master/Worker, got {sorted(replicas)}")
    if "Master" in replicas and replicas["Master"].get("replicas", 1) != 1:
        errors.append("Master replicas must be 1")
    for role, rspec in replicas.items():
        containers = rspec["template"]["spec"].get("containers", [])
        pytorch = [c for c in containers if c.get("name") == "pytorch"]
        if not pytorch or not pytorch[0].get("image"):
            errors.append(f"{role}: needs a container named 'pytorch' with an image")
    if "elasticPolicy" in spec:
        if "Worker" not in replicas:
            errors.append("elasticPolicy needs a Worker replica")
        if spec["elasticPolicy"].get("nProcPerNode") is not None and "nprocPerNode" in spec:
            errors.append("elasticPolicy.nProcPerNode and nprocPerNode are mutually exclusive")
    return errors


def trainjob_rule_errors(doc: dict[str, Any]) -> list[str]:
    """The CEL rules on the TrainJob CRD (x-kubernetes-validations) that jsonschema skips."""
    name = doc["metadata"]["name"]
    if len(name) > 63 or not DNS1035.match(name):
        return [f"metadata.name {name!r} must match RFC 1035 and be at most 63 characters"]
    return []


# Trainer v2.3 torch plugin: trainer.env may not set what the plugin injects.
TORCHRUN_RESERVED_ENV = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR",
                         "PET_MASTER_PORT"}


def trainjob_webhook_errors(doc: dict[str, Any]) -> list[str]:
    """Trainer v2.3 `plugins/torch` Validate, rule by rule."""
    trainer = doc["spec"].get("trainer", {})
    errors = []
    nproc = trainer.get("numProcPerNode")
    if isinstance(nproc, str) and nproc not in ("auto", "cpu", "gpu"):
        errors.append(f"numProcPerNode {nproc!r} must be an int or auto/cpu/gpu")
    reserved = sorted({e["name"] for e in trainer.get("env", [])} & TORCHRUN_RESERVED_ENV)
    if reserved:
        errors.append(f"trainer.env must not set reserved envs {reserved}")
    return errors


_DOMAIN_PREFIXED = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
                              r"/\S+$")
# Containers whose env only the TrainJob's own APIs set (trainer.env, initializer env).
_NO_PATCHED_ENV = {"node", "dataset-initializer", "model-initializer"}
MAX_RUNTIME_JOB_NAME = 20  # Trainer v2.4.0 release notes (#4394): runtimes' ReplicatedJob names


def runtime_patch_errors(doc: dict[str, Any], runtime: dict[str, Any]) -> list[str]:
    """Trainer's jobset plugin Validate (main at 2026-08-21, as in v2.3.0) for a TrainJob's
    runtimePatches against the runtime it names, rule by rule, plus v2.4's name limit."""
    jobs = {rj["name"]: {c["name"] for key in ("containers", "initContainers")
                         for c in rj["template"]["spec"]["template"]["spec"].get(key, [])}
            for rj in runtime["spec"]["template"]["spec"]["replicatedJobs"]}
    errors = [f"runtime replicated job {name!r} is over {MAX_RUNTIME_JOB_NAME} characters"
              for name in jobs if len(name) > MAX_RUNTIME_JOB_NAME]
    for patch in doc["spec"].get("runtimePatches", []):
        if not _DOMAIN_PREFIXED.match(patch["manager"]):
            errors.append(f"manager {patch['manager']!r} is not a domain-prefixed path")
        spec = ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}
        for rjob in spec.get("replicatedJobs", []):
            if rjob["name"] not in jobs:
                errors.append(f"replicated job {rjob['name']!r} is not in the runtime")
                continue
            pod = rjob.get("template", {}).get("spec", {}).get("template", {}).get("spec", {})
            for key in ("initContainers", "containers"):
                errors += [f"{key} {c['name']!r} is not in runtime job {rjob['name']}"
                           for c in pod.get(key, []) if c["name"] not in jobs[rjob["name"]]]
            for c in pod.get("containers", []):  # upstream checks env on containers only
                if c.get("env") and c["name"] in _NO_PATCHED_ENV:
                    errors.append(f"container {c['name']!r} may not get env from a patch")
    return errors


CORE_KINDS = {"ConfigMap", "PersistentVolumeClaim", "Pod", "Service", "Secret"}


def core_errors(doc: dict[str, Any]) -> list[str]:
    """A core object checked by kubernetes-validate against the Kubernetes 1.37 OpenAPI schema,
    strict (unknown fields are errors). Quantities are checked too, which the schema leaves
    as free int-or-string."""
    import kubernetes_validate

    assert doc["kind"] in CORE_KINDS, f"{doc['kind']} is not a core kind; use schema_errors"
    try:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)
    except kubernetes_validate.ValidationError as err:
        path = ".".join(map(str, err.path))
        return [f"{path or '<root>'}: {err.message}"]
    return [f"{path}: {value!r} is not a quantity" for path, value in _quantities(doc)
            if not QUANTITY.match(str(value))]


QUANTITY = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|"
                      r"n|u|m|k|M|G|T|P|E)?$")


def _quantities(node: Any, path: str = "") -> list[tuple[str, Any]]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else key
            if key in ("limits", "requests") and isinstance(value, dict):
                out += [(f"{sub}.{k}", v) for k, v in value.items()]
            elif key == "sizeLimit":
                out.append((sub, value))
            else:
                out += _quantities(value, sub)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _quantities(value, f"{path}[{i}]")
    return out


# Pod Security Standards, `restricted` profile (Kubernetes 1.33+, which includes `baseline`).
_BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                  "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
_RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                       "persistentVolumeClaim", "projected", "secret"}
_SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                 "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                 "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                 "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                 "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every check of the `restricted` Pod Security Standard that this pod spec fails, as
    Pod Security Admission would report it at `enforce: restricted`."""
    out = []
    psc = pod.get("securityContext", {})
    containers = [*pod.get("initContainers", []), *pod.get("containers", []),
                  *pod.get("ephemeralContainers", [])]
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"host namespaces: {key}")
    for vol in pod.get("volumes", []):
        kind = next(k for k in vol if k != "name")
        if kind not in _RESTRICTED_VOLUMES:
            out.append(f"restricted volume types: {vol['name']} is {kind}")
    for sysctl in psc.get("sysctls", []):
        if sysctl["name"] not in _SAFE_SYSCTLS:
            out.append(f"sysctls: {sysctl['name']}")

    def seccomp_ok(sc: dict[str, Any]) -> bool | None:
        kind = sc.get("seccompProfile", {}).get("type")
        return None if kind is None else kind in ("RuntimeDefault", "Localhost")

    pod_nonroot, pod_seccomp = psc.get("runAsNonRoot"), seccomp_ok(psc)
    if psc.get("runAsUser") == 0:
        out.append("runAsUser=0 (pod)")
    if pod_seccomp is False:
        out.append("seccompProfile (pod) must be RuntimeDefault or Localhost")
    for c in containers:
        sc, name = c.get("securityContext", {}), c["name"]
        if sc.get("privileged"):
            out.append(f"privileged: {name}")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                out.append(f"hostPort: {name}")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"allowPrivilegeEscalation != false: {name}")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(f"unrestricted capabilities (must drop ALL): {name}")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"capabilities added beyond NET_BIND_SERVICE: {name}")
        if set(caps.get("add", [])) - _BASELINE_CAPS:
            out.append(f"non-default capabilities: {name}")
        nonroot = sc.get("runAsNonRoot", pod_nonroot)
        if nonroot is not True:
            out.append(f"runAsNonRoot != true: {name}")
        if sc.get("runAsUser") == 0:
            out.append(f"runAsUser=0: {name}")
        c_seccomp = seccomp_ok(sc)
        if c_seccomp is False or (c_seccomp is None and pod_seccomp is not True):
            out.append(f"seccompProfile must be RuntimeDefault or Localhost: {name}")
    return out
