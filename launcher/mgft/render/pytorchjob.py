"""Kubeflow training-operator v1 PyTorchJob (`kubeflow.org/v1`)."""

from __future__ import annotations

from mgft import __version__
from mgft.render.common import job_env, labels, render_template, trainer_argv
from mgft.spec import JobSpec

# A pod that fails is restarted in place (restartPolicy OnFailure) up to this many times.
BACKOFF_LIMIT = 3


def render_pytorchjob(spec: JobSpec) -> str:
    nodes = spec.resources.nodes
    roles = [("Master", 1)] + ([("Worker", nodes - 1)] if nodes > 1 else [])
    # The operator injects PET_NNODES, PET_NODE_RANK and PET_MASTER_ADDR/PORT; a bare
    # torchrun reads them, so the command names no rendezvous of its own.
    return render_template(
        "pytorchjob.yaml.j2",
        version=__version__,
        name=spec.job_name,
        namespace=spec.k8s.namespace,
        labels=sorted(labels(spec).items()),
        nproc_per_node=spec.nproc_per_node,
        backoff_limit=BACKOFF_LIMIT,
        roles=roles,
        image=spec.image,
        command=["torchrun", *trainer_argv(spec)],
        env=list(job_env(spec).items()),
        gpus=spec.resources.gpus,
        shm_size=spec.k8s.shm_size,
    )
