"""What `mgft status|logs|cancel|list` ask a backend about a job that was submitted."""

from __future__ import annotations

from dataclasses import dataclass

from mgft.spec.choices import K8sApi


@dataclass(frozen=True, kw_only=True, slots=True)
class JobQuery:
    name: str | None = None  # None for `list`
    namespace: str = "default"  # k8s
    api: K8sApi | None = None  # k8s: None looks for a PyTorchJob, then a TrainJob
    # logs: k8s shows this node's pod (None: the master, node 0); Slurm keeps only this global
    # rank's lines (None: every rank's).
    rank: int | None = None
    follow: bool = False  # logs: keep streaming until the job ends
    as_json: bool = False  # status, list: JSON instead of text
