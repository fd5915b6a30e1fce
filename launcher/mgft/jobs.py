"""What `mgft status|logs|cancel|list` ask a backend about a job that was submitted."""

from __future__ import annotations

from dataclasses import dataclass

from mgft.spec import K8sApi


@dataclass(frozen=True, kw_only=True, slots=True)
class JobQuery:
    name: str | None = None  # None for `list`
    namespace: str = "default"  # k8s
    api: K8sApi | None = None  # k8s: None looks for a PyTorchJob, then a TrainJob
    rank: int = 0  # logs: the node (pod) whose output to show; 0 is the master
    follow: bool = False  # logs: keep streaming until the pod ends
