"""The objects a Kubeflow job may bring along: a ConfigMap with the job's own config, and a
PersistentVolumeClaim for outputs and checkpoints. Rendered before the job, in one stream."""

from __future__ import annotations

import functools

from pydantic import TypeAdapter

from mgft.render.pod import CONFIG_FILE, claim_name, config_map_name
from mgft.spec.job import JobSpec


@functools.cache
def _adapter() -> TypeAdapter[JobSpec]:
    return TypeAdapter(JobSpec)


def job_config(spec: JobSpec) -> str:
    """The resolved job as a `--config` file: `mgft render --config` on it renders this job."""
    import yaml  # only for a job that asks for its ConfigMap

    data = _adapter().dump_python(spec, mode="json")
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def config_map(spec: JobSpec) -> dict | None:
    if not spec.k8s.config_map:
        return None
    return {"name": config_map_name(spec), "file": CONFIG_FILE, "text": job_config(spec)}


def claim(spec: JobSpec) -> dict | None:
    """Only a claim mgft creates (--pvc-size); an existing --pvc is just mounted."""
    if spec.k8s.pvc_size is None:
        return None
    # One node writes alone; several nodes share the claim, which needs ReadWriteMany.
    mode = "ReadWriteOnce" if spec.resources.nodes == 1 else "ReadWriteMany"
    return {"name": claim_name(spec), "size": spec.k8s.pvc_size, "access_mode": mode,
            "storage_class": spec.k8s.storage_class}
