"""Kubeflow Trainer v2 TrainJob (`trainer.kubeflow.org/v1alpha1`).

One document for every Trainer release mgft supports, so no setting picks between them: it
uses only what v2.3 and v2.4 (the newest release) share. runtimePatches came in v2.2 (it
replaced podTemplateOverrides, which a Trainer v2.0 or v2.1 would drop); a patch may name only
a replicated job and containers the runtime has, may not set env on the `node` container
(that goes in trainer.env), and carries no priorityClassName, schedulerName or backoffLimit
(hence the PyTorchJob-only options in `mgft.spec.rules.k8s`). v2.4 limits a runtime's
replicated job names to 20 characters; the stock runtime's `node` fits.
"""

from __future__ import annotations

from mgft import __version__
from mgft.render import companions as k8s_companions
from mgft.render import pod as k8s_pod
from mgft.render.template import render_template
from mgft.spec.job import JobSpec

# The stock torch-distributed runtime runs one replicated job "node" with a container "node".
REPLICATED_JOB = "node"
CONTAINER = "node"


def render_trainjob(spec: JobSpec) -> str:
    # Trainer v2 injects PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK and PET_MASTER_*,
    # which `mgft-node` in the container turns into the torchrun command line.
    return render_template(
        "trainjob.yaml.j2",
        version=__version__,
        name=spec.job_name,
        namespace=spec.k8s.namespace,
        labels=sorted(k8s_pod.labels(spec).items()),
        job_labels=k8s_pod.job_labels(spec),
        runtime=spec.k8s.runtime,
        nodes=spec.resources.nodes,
        nproc_per_node=spec.nproc_per_node,
        replicated_job=REPLICATED_JOB,
        container=CONTAINER,
        pod=k8s_pod.pod(spec),
        config_map=k8s_companions.config_map(spec),
        claim=k8s_companions.claim(spec),
    )
