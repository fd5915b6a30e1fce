"""Kubeflow Trainer v2 TrainJob (`trainer.kubeflow.org/v1alpha1`)."""

from __future__ import annotations

from mgft import __version__
from mgft.render.common import job_env, labels, render_template, trainer_argv
from mgft.spec import JobSpec

# The stock torch-distributed runtime runs one replicated job "node" with a container "node".
REPLICATED_JOB = "node"
CONTAINER = "node"


def render_trainjob(spec: JobSpec) -> str:
    # Trainer v2 injects PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK and PET_MASTER_*,
    # which a bare torchrun reads.
    return render_template(
        "trainjob.yaml.j2",
        version=__version__,
        name=spec.job_name,
        namespace=spec.k8s.namespace,
        labels=sorted(labels(spec).items()),
        runtime=spec.k8s.runtime,
        image=spec.image,
        command=["torchrun", *trainer_argv(spec)],
        env=list(job_env(spec).items()),
        nodes=spec.resources.nodes,
        nproc_per_node=spec.nproc_per_node,
        gpus=spec.resources.gpus,
        replicated_job=REPLICATED_JOB,
        container=CONTAINER,
        shm_size=spec.k8s.shm_size,
    )
