"""The pod that every Kubeflow job runs, as plain data for the templates: the entry command,
environment (values and secret references), volumes, security and scheduling.

PyTorchJob puts it in each replica's pod template; TrainJob splits it between `trainer` and a
`runtimePatches` entry. Both read it from here, so the two APIs run the same pod.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mgft.contract.process import job_env, trainer_argv
from mgft.render.template import labels
from mgft.spec.job import JobSpec, PodSecurity
from mgft.spec.rules.k8s import SECRET_ENV, split_secret_ref

# The console script `mgft.node.k8s` installs in the image: it waits for the master and
# execs torchrun with what the operator injected (see that module).
ENTRY = "mgft-node"
CONFIG_DIR = "/etc/mgft"
CONFIG_FILE = "job.yaml"


def kubelet_literal(text: str) -> str:
    """Kubernetes expands `$(VAR)` in command words and env values, and turns `$$` into `$`;
    doubling every `$` makes the kubelet hand the process exactly `text`."""
    return text.replace("$", "$$")


@dataclass(frozen=True, kw_only=True, slots=True)
class EnvEntry:
    name: str
    value: str | None = None
    secret: str | None = None  # secretKeyRef name (then `value` is None)
    key: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Volume:
    name: str
    mount_path: str
    kind: str  # "shm", "claim" or "config"
    source: str  # sizeLimit, claimName or ConfigMap name
    read_only: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Pod:
    image: str
    command: list[str]
    env: list[EnvEntry]
    labels: list[tuple[str, str]]
    gpus: int
    restricted: bool
    volumes: list[Volume]
    node_selector: list[tuple[str, str]] = field(default_factory=list)
    tolerations: list[list[tuple[str, str]]] = field(default_factory=list)
    image_pull_secrets: tuple[str, ...] = ()
    priority_class: str | None = None
    scheduler_name: str | None = None


def claim_name(spec: JobSpec) -> str | None:
    if spec.k8s.pvc is not None:
        return spec.k8s.pvc
    return f"{spec.job_name}-output" if spec.k8s.pvc_size is not None else None


def config_map_name(spec: JobSpec) -> str:
    return f"{spec.job_name}-config"


def entry_command(spec: JobSpec) -> list[str]:
    """mgft-node's own flags, then `--` and what torchrun runs."""
    words = [ENTRY, f"--nproc-per-node={spec.nproc_per_node}",
             f"--master-wait={spec.k8s.master_wait}"]
    if claim_name(spec) is not None:
        words.append(f"--workdir={spec.k8s.mount_path}")
    return [*words, "--", *trainer_argv(spec)]


def env_entries(spec: JobSpec) -> list[EnvEntry]:
    """mgft's defaults (a user's --env may change their value, not their place), the user's
    other variables by name (the order Helm's `range` gives), then secret references."""
    base = job_env(dataclasses.replace(spec, env={}))
    merged = job_env(spec)
    names = list(base) + sorted(k for k in spec.env if k not in base)
    entries = [EnvEntry(name=k, value=kubelet_literal(merged[k])) for k in names]
    for path, (env_name, default_key) in SECRET_ENV.items():
        ref = getattr(spec.k8s, path)
        if ref is not None:
            secret, key = split_secret_ref(ref, default_key)
            entries.append(EnvEntry(name=env_name, secret=secret, key=key))
    for env_name, ref in sorted(spec.k8s.secret_env.items()):
        secret, key = split_secret_ref(ref, "")
        entries.append(EnvEntry(name=env_name, secret=secret, key=key))
    return entries


def volumes(spec: JobSpec) -> list[Volume]:
    out = [Volume(name="dshm", mount_path="/dev/shm", kind="shm", source=spec.k8s.shm_size)]
    claim = claim_name(spec)
    if claim is not None:
        out.append(Volume(name="output", mount_path=spec.k8s.mount_path, kind="claim",
                          source=claim))
    if spec.k8s.config_map:
        out.append(Volume(name="mgft-config", mount_path=CONFIG_DIR, kind="config",
                          source=config_map_name(spec), read_only=True))
    return out


def pod(spec: JobSpec) -> Pod:
    k8s = spec.k8s
    tolerations = [[(k, v) for k, v in (("key", t.key), ("operator", t.operator),
                                         ("value", t.value), ("effect", t.effect))
                     if v is not None] for t in k8s.tolerations]
    scheduler = k8s.scheduler_name or ("volcano" if k8s.volcano_queue else None)
    assert spec.image is not None, "validate requires an image for k8s"
    return Pod(
        image=spec.image,
        command=[kubelet_literal(w) for w in entry_command(spec)],
        env=env_entries(spec),
        labels=sorted(labels(spec).items()),
        gpus=spec.resources.gpus,
        restricted=k8s.pod_security is PodSecurity.RESTRICTED,
        volumes=volumes(spec),
        node_selector=sorted(k8s.node_selector.items()),
        tolerations=tolerations,
        image_pull_secrets=k8s.image_pull_secrets,
        priority_class=k8s.priority_class,
        scheduler_name=scheduler,
    )


def job_labels(spec: JobSpec) -> list[tuple[str, str]]:
    """The job object's labels: mgft's, plus Kueue's queue label when asked."""
    out = dict(labels(spec))
    if spec.k8s.kueue_queue:
        out["kueue.x-k8s.io/queue-name"] = spec.k8s.kueue_queue
    return sorted(out.items())
