"""Submission to slurm. Rendering works today (`mgft render --backend slurm`); submitting
through the submitit comes with the slurm backend issue."""

from __future__ import annotations

from mgft.errors import SubmitError
from mgft.spec import JobSpec

HOW = "mgft render --backend slurm ... > job.sbatch && sbatch job.sbatch"


def submit(spec: JobSpec) -> int:
    raise SubmitError(f"submitting to slurm is not implemented in this version yet; "
                      f"render the job and submit it yourself: {HOW}")
