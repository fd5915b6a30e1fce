"""The Kubernetes API as mgft uses it: the official client loaded lazily, the two Kubeflow job
kinds, and API failures turned into one line that says what to do.

Nothing here imports `kubernetes` at module level: `import mgft.cli.main` must stay light.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mgft.spec.errors import SubmitError
from mgft.spec.job import K8sApi

T = TypeVar("T")
# (connect, read) seconds for one API call; `logs -f` streams without a read timeout.
TIMEOUT = (10, 60)


@dataclass(frozen=True, kw_only=True, slots=True)
class Kind:
    api: K8sApi
    kind: str
    group: str
    version: str
    plural: str
    container: str  # the trainer's container in each pod
    pod_label: str  # the operator's label naming the job on each pod
    operator: str
    install: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


KINDS = {
    K8sApi.PYTORCHJOB: Kind(
        api=K8sApi.PYTORCHJOB, kind="PyTorchJob", group="kubeflow.org", version="v1",
        plural="pytorchjobs", container="pytorch", pod_label="training.kubeflow.org/job-name",
        operator="the Kubeflow training operator",
        install="kubectl apply --server-side -k 'github.com/kubeflow/trainer.git/"
                "manifests/overlays/standalone?ref=v1.9.4'"),
    K8sApi.TRAINJOB: Kind(
        api=K8sApi.TRAINJOB, kind="TrainJob", group="trainer.kubeflow.org", version="v1alpha1",
        plural="trainjobs", container="node", pod_label="jobset.sigs.k8s.io/jobset-name",
        operator="Kubeflow Trainer v2",
        install="helm install kubeflow-trainer oci://ghcr.io/kubeflow/charts/kubeflow-trainer "
                "--namespace kubeflow-system --create-namespace --version 2.4.0 "
                "--set runtimes.defaultEnabled=true"),
}
BY_KIND = {k.kind: k for k in KINDS.values()}


class Cluster:
    """The API clients for one kubeconfig context (or the pod's service account)."""

    def __init__(self) -> None:
        from kubernetes import client

        self.client = _api_client()
        self.core = client.CoreV1Api(self.client)
        self.custom = client.CustomObjectsApi(self.client)

    @property
    def host(self) -> str:
        return str(self.client.configuration.host)

    def call(self, doing: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one API call; every failure becomes a SubmitError that starts with `doing`."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return func(*args, _request_timeout=kwargs.pop("_request_timeout", TIMEOUT),
                        **kwargs)
        except ApiException as err:
            raise ApiFailure(err.status or 0, doing, reason(err)) from None
        except HTTPError as err:
            raise SubmitError(
                f"{doing}: cannot reach the Kubernetes API server at {self.host} "
                f"({_root_cause(err)}); check the kubeconfig's current context "
                "(kubectl config current-context) and that the cluster is up") from None


_NO_CREDENTIALS = ("point KUBECONFIG at a kubeconfig (or unset it to use ~/.kube/config), or "
                   "run inside a cluster")


def _api_client() -> Any:
    """A client from $KUBECONFIG (a list of files works) or ~/.kube/config, read now rather
    than when kubernetes was imported; else the pod's service account. A kubeconfig that is
    there but is not one is an error, as with kubectl: it never falls through to the pod."""
    from kubernetes import client, config

    env = os.environ.get("KUBECONFIG")
    paths = [p for p in (env or "").split(os.pathsep) if p] or [
        os.path.expanduser("~/.kube/config")]
    where = f"KUBECONFIG={env}" if env else f"{paths[0]} (KUBECONFIG is not set)"
    present = [p for p in paths if os.path.exists(p)]
    problem = "no such file" if len(paths) == 1 else "none of these files exists"
    if present:
        try:
            return config.new_client_from_config(os.pathsep.join(present))
        except config.ConfigException as err:  # empty, or no current context: as if absent
            problem = _first_line(err)
        except Exception as err:  # on garbage the client raises TypeError, YAMLError, ...
            raise SubmitError(f"no Kubernetes credentials: {where} is not a kubeconfig "
                              f"({_not_kubeconfig(err)}); {_NO_CREDENTIALS}") from None
    try:
        config.load_incluster_config()
    except config.ConfigException:
        raise SubmitError(f"no Kubernetes credentials: {where}: {problem}, and this is not a "
                          f"pod in a cluster; {_NO_CREDENTIALS}") from None
    return client.ApiClient()


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")


def _not_kubeconfig(err: BaseException) -> str:
    import yaml

    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        return f"not YAML: {err.problem} at line {err.problem_mark.line + 1}"
    if isinstance(err, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(err, OSError):
        return (err.strerror or _first_line(err)).lower()
    return "expected a mapping with clusters, users, contexts and current-context"


class ApiFailure(SubmitError):
    """An HTTP error from the API server, with its status for callers that expect some."""

    def __init__(self, status: int, doing: str, why: str) -> None:
        self.status, self.doing, self.why = status, doing, why
        super().__init__(f"{doing}: {_explain(status, why)}")


def reason(err: Any) -> str:
    """The API server's own message from a Status body, else the HTTP reason."""
    try:
        body = json.loads(err.body)
        return str(body.get("message") or err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)


def _explain(status: int, why: str) -> str:
    if status == 401:
        return (f"the cluster rejected the kubeconfig's credentials ({why}); log in again or "
                "refresh the token")
    if status == 403:
        return (f"forbidden by RBAC ({why}); ask a cluster admin for a Role that allows it, "
                "and check with `kubectl auth can-i`")
    if status == 409:
        return f"it already exists ({why})"
    if status == 422:
        return f"the API server rejected the object ({why})"
    return f"HTTP {status} ({why})"


def _root_cause(err: BaseException) -> str:
    reason_ = getattr(err, "reason", None)
    while isinstance(reason_, BaseException) and getattr(reason_, "reason", None) is not None:
        reason_ = reason_.reason
    text = str(reason_ or err)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return text


def missing_operator(kind: Kind) -> SubmitError:
    return SubmitError(
        f"{kind.operator} is not installed: this cluster does not serve the {kind.kind} API "
        f"({kind.api_version}); install it with: {kind.install}")


def serves(cluster: Cluster, kind: Kind) -> bool:
    """Whether the cluster serves the job's API, through API discovery (GET /apis/GROUP/VERSION),
    which every authenticated user may read (reading the CustomResourceDefinition itself needs
    cluster-wide rights). An API group that is not installed answers 404."""
    try:
        resources = cluster.call(f"checking for the {kind.kind} API",
                                 cluster.custom.get_api_resources, kind.group, kind.version)
    except ApiFailure as err:
        if err.status == 404:
            return False
        raise
    return kind.plural in {r.name for r in resources.resources or []}


def require_operator(cluster: Cluster, kind: Kind) -> None:
    if not serves(cluster, kind):
        raise missing_operator(kind)


def get_job(cluster: Cluster, kind: Kind, namespace: str, name: str) -> dict | None:
    """The job object, or None when there is no job of that name."""
    try:
        return cluster.call(f"reading {kind.kind} {namespace}/{name}",
                            cluster.custom.get_namespaced_custom_object, kind.group,
                            kind.version, namespace, kind.plural, name)
    except ApiFailure as err:
        if err.status == 404:
            return None
        raise
