"""Submitters: thin wrappers that hold the side effects. Loaded lazily by name, so the CLI
never imports the kubernetes client or submitit unless that backend is used."""

from __future__ import annotations

import importlib
from types import ModuleType

from mgft.spec.choices import Backend

_MODULES = {
    Backend.LOCAL: "mgft.backends.local.submit",
    Backend.SLURM: "mgft.backends.slurm.submit",
    Backend.K8S: "mgft.backends.k8s.submit",
}


def load(backend: Backend) -> ModuleType:
    return importlib.import_module(_MODULES[backend])
