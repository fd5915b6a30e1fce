"""Which backend answers `mgft status|logs|cancel|list`: --backend, else the job id's form.

Slurm job ids are numbers (`1234`, or `1234_5` in an array); anything else names a Kubernetes
job. Each backend module that manages jobs has status, logs, cancel and list_jobs, each
taking a `mgft.backends.query.JobQuery` (the commands are in `mgft.cli.jobs`).
"""

from __future__ import annotations

from types import ModuleType

from mgft import backends
from mgft.backends.slurm.queue import JOB_ID
from mgft.spec.errors import SubmitError
from mgft.spec.job import Backend

# Backends whose jobs `mgft list` shows when no --backend is given.
LISTED = (Backend.SLURM,)


def backend_for(job_id: str, backend: str | None) -> Backend:
    if backend is not None:
        return Backend(backend)
    return Backend.SLURM if JOB_ID.match(job_id) else Backend.K8S


def manager(backend: Backend, command: str) -> ModuleType:
    module = backends.load(backend)
    if not hasattr(module, "status"):
        what = "local runs end with `mgft submit`" if backend is Backend.LOCAL else (
            "not in this version yet")
        raise SubmitError(f"mgft {command} for {backend.value} jobs: {what}")
    return module
