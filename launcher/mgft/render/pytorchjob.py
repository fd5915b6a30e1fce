"""Kubeflow training-operator v1 PyTorchJob (`kubeflow.org/v1`)."""

from __future__ import annotations

from mgft import __version__
from mgft.render import companions as k8s_companions
from mgft.render import pod as k8s_pod
from mgft.render.template import render_template
from mgft.spec.job import JobSpec
from mgft.spec.rules.k8s import elastic_range

# A pod that fails is restarted in place (restartPolicy OnFailure) up to this many times.
BACKOFF_LIMIT = 3


def render_pytorchjob(spec: JobSpec) -> str:
    nodes = spec.resources.nodes
    elastic = None
    if spec.k8s.elastic:
        # Elastic jobs have no Master: torchrun's c10d rendezvous runs on worker 0.
        low, high = elastic_range(spec)
        elastic = {"min": low, "max": high, "max_restarts": spec.k8s.max_restarts}
        roles = [("Worker", nodes)]
    else:
        roles = [("Master", 1)] + ([("Worker", nodes - 1)] if nodes > 1 else [])
    # The operator injects the rendezvous (PET_*, MASTER_ADDR, ...); `mgft-node` in the
    # container turns it into the torchrun command line.
    return render_template(
        "pytorchjob.yaml.j2",
        version=__version__,
        name=spec.job_name,
        namespace=spec.k8s.namespace,
        labels=sorted(k8s_pod.labels(spec).items()),
        job_labels=k8s_pod.job_labels(spec),
        nproc_per_node=spec.nproc_per_node,
        backoff_limit=BACKOFF_LIMIT if spec.k8s.backoff_limit is None else spec.k8s.backoff_limit,
        volcano_queue=spec.k8s.volcano_queue,
        elastic=elastic,
        roles=roles,
        pod=k8s_pod.pod(spec),
        config_map=k8s_companions.config_map(spec),
        claim=k8s_companions.claim(spec),
    )
