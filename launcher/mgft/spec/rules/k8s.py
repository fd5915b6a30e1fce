"""Rules for the Kubernetes options that types alone cannot express. Pure: no I/O.

Called from `mgft.spec.validate` for `--backend k8s`. Every name that lands in a Kubernetes object
is checked against the API server's own syntax here, so a bad value is one line before
anything is rendered instead of a 422 from the cluster.
"""

from __future__ import annotations

import posixpath
import re

from mgft.contract.env import RESERVED
from mgft.spec.errors import fail
from mgft.spec.flags import display_name
from mgft.spec.job import JobSpec, K8sApi
from mgft.spec.names import DNS1123_LABEL, DNS1123_SUBDOMAIN, ENV_NAME, QUANTITY

_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# Where a claim must not go: the image's system directories and mgft's own mounts.
_NO_MOUNT = ("/", "/dev", "/dev/shm", "/proc", "/sys", "/etc", "/etc/mgft", "/usr", "/bin")
# The env names the two named secrets set, and their default keys.
SECRET_ENV = {"hf_token_secret": ("HF_TOKEN", "token"),
              "wandb_secret": ("WANDB_API_KEY", "api-key")}
# Options a TrainJob cannot carry: Trainer v2.3 and v2.4 runtimePatches patch a pod's volumes,
# containers' mounts and security, placement and pull secrets, but no priorityClassName or
# schedulerName, and a TrainJob has no backoffLimit or elastic policy (v2.2 removed it).
_PYTORCHJOB_ONLY = ("backoff_limit", "priority_class", "scheduler_name", "volcano_queue",
                    "elastic_min_nodes", "elastic_max_nodes", "max_restarts")



def split_secret_ref(ref: str, default_key: str) -> tuple[str, str]:
    name, _, key = ref.partition(":")
    return name, key or default_key


def check(spec: JobSpec) -> None:
    ns = spec.k8s.namespace
    if len(ns) > 63 or not DNS1123_LABEL.match(ns):
        fail("k8s.namespace", ns, "not a valid namespace (a DNS-1123 label)",
              "use lowercase letters, digits and '-', at most 63 characters")
    if not QUANTITY.match(spec.k8s.shm_size):
        fail("k8s.shm_size", spec.k8s.shm_size, "not a Kubernetes quantity",
              "use a size such as 16Gi or 512Mi")
    if len(spec.k8s.runtime) > 253 or not DNS1123_SUBDOMAIN.match(spec.k8s.runtime):
        fail("k8s.runtime", spec.k8s.runtime, "not a valid runtime name",
              "use the name of a ClusterTrainingRuntime, e.g. torch-distributed")
    k8s = spec.k8s
    _check_api_support(spec)
    for path in ("pvc", "storage_class", "priority_class", "scheduler_name"):
        value = getattr(k8s, path)
        if value is not None and (len(value) > 253 or not DNS1123_SUBDOMAIN.match(value)):
            fail(f"k8s.{path}", value, "not a valid Kubernetes name",
                  "use lowercase letters, digits, '-' and '.', e.g. 'my-name'")
    for path in ("kueue_queue", "volcano_queue"):
        value = getattr(k8s, path)
        if value is not None and (len(value) > 63 or not DNS1123_LABEL.match(value)):
            fail(f"k8s.{path}", value, "not a valid queue name (a DNS-1123 label)",
                  "use lowercase letters, digits and '-', at most 63 characters")
    if k8s.kueue_queue and k8s.volcano_queue:
        fail("k8s.volcano_queue", k8s.volcano_queue, "--kueue-queue is set too",
              "pick one queueing system: Kueue or Volcano")
    for name in k8s.image_pull_secrets:
        if not DNS1123_SUBDOMAIN.match(name):
            fail("k8s.image_pull_secrets", name, "not a valid secret name",
                  "use lowercase letters, digits, '-' and '.'")
    _check_storage(spec)
    _check_secrets(spec)
    _check_scheduling(spec)
    _check_elastic(spec)


def _check_api_support(spec: JobSpec) -> None:
    if spec.k8s.api is not K8sApi.TRAINJOB:
        return
    for path in _PYTORCHJOB_ONLY:
        value = getattr(spec.k8s, path)
        if value is not None:
            fail(f"k8s.{path}", value, "a TrainJob cannot set this (Trainer v2 takes it from "
                  "the ClusterTrainingRuntime)", "drop it, or use --k8s-api pytorchjob")


def _check_storage(spec: JobSpec) -> None:
    k8s = spec.k8s
    if k8s.pvc_size is not None and not QUANTITY.match(k8s.pvc_size):
        fail("k8s.pvc_size", k8s.pvc_size, "not a Kubernetes quantity",
              "use a size such as 100Gi")
    if k8s.storage_class is not None and k8s.pvc_size is None:
        fail("k8s.storage_class", k8s.storage_class, "only applies to a claim mgft creates",
              "add --pvc-size, or drop --storage-class")
    path = k8s.mount_path
    if (not path.startswith("/") or posixpath.normpath(path) != path or ":" in path
            or "\n" in path or path in _NO_MOUNT or path.startswith("/etc/mgft/")):
        fail("k8s.mount_path", path, "not a usable mount point",
              "use a normalized absolute directory outside system paths, e.g. /workspace")


def _check_secrets(spec: JobSpec) -> None:
    k8s = spec.k8s
    wanted: dict[str, tuple[str, str]] = {}
    for path, (env_name, default_key) in SECRET_ENV.items():
        ref = getattr(k8s, path)
        if ref is not None:
            wanted[env_name] = (f"k8s.{path}", ref)
            _check_secret_ref(f"k8s.{path}", ref, default_key)
    for env_name, ref in k8s.secret_env.items():
        path = f"k8s.secret_env.{env_name}"
        if not ENV_NAME.match(env_name) or env_name in RESERVED:
            fail(path, env_name, "not an environment variable a secret may set",
                  "use letters, digits and '_', not a name mgft or torchrun sets")
        if ":" not in ref:
            fail(path, ref, "needs the key inside the secret", "write SECRET:KEY")
        _check_secret_ref(path, ref, "")
        if env_name in wanted:
            fail(path, env_name, f"also set by {display_name(wanted[env_name][0])}",
                  "set it once")
        wanted[env_name] = (path, ref)
    for env_name, (path, _) in wanted.items():
        if env_name in spec.env:
            fail(f"env.{env_name}", env_name, f"also comes from a secret ({display_name(path)})",
                  "keep secrets out of --env; set it once")


def _check_secret_ref(path: str, ref: str, default_key: str) -> None:
    name, key = split_secret_ref(ref, default_key)
    if not DNS1123_SUBDOMAIN.match(name) or not _SECRET_KEY.match(key):
        fail(path, ref, "not a secret reference",
              "write SECRET or SECRET:KEY, e.g. hf-token:token")


def _check_scheduling(spec: JobSpec) -> None:
    for key, value in spec.k8s.node_selector.items():
        prefix, _, name = key.rpartition("/")
        if (len(name) > 63 or not _LABEL_NAME.match(name)
                or (prefix and not DNS1123_SUBDOMAIN.match(prefix))):
            fail("k8s.node_selector", key, "not a label key", "write key=value, e.g. gpu=a100")
        if len(value) > 63 or (value and not _LABEL_NAME.match(value)):
            fail("k8s.node_selector", value, "not a label value",
                  "use letters, digits, '-', '_' and '.', at most 63 characters")
    for tol in spec.k8s.tolerations:
        if tol.operator == "Exists" and tol.value is not None:
            fail("k8s.tolerations", tol.value, "operator Exists takes no value", "drop value")
        if tol.key is None and tol.operator != "Exists":
            fail("k8s.tolerations", tol.key, "a toleration without a key must use Exists",
                  "add a key, or set operator: Exists")


def elastic_range(spec: JobSpec) -> tuple[int, int]:
    """(min, max) nodes of an elastic job; either bound defaults to --nodes."""
    nodes = spec.resources.nodes
    low = spec.k8s.elastic_min_nodes or nodes
    return low, spec.k8s.elastic_max_nodes or max(nodes, low)


def _check_elastic(spec: JobSpec) -> None:
    k8s, nodes = spec.k8s, spec.resources.nodes
    if not k8s.elastic:
        if k8s.max_restarts is not None:
            fail("k8s.max_restarts", k8s.max_restarts, "only applies to an elastic job",
                  "add --elastic-min-nodes/--elastic-max-nodes, or drop --elastic-max-restarts")
        return
    low, high = elastic_range(spec)
    if low > high:
        fail("k8s.elastic_min_nodes", low, f"above --elastic-max-nodes {high}",
              f"use at most {high}")
    if not low <= nodes <= high:
        fail("resources.nodes", nodes, f"outside the elastic range {low}:{high}",
              f"use --nodes between {low} and {high}")
