"""Submission to k8s. Rendering works today (`mgft render --backend k8s`); submitting
through the kubernetes client comes with the k8s backend issue."""

from __future__ import annotations

from mgft.errors import SubmitError
from mgft.spec import JobSpec

HOW = "mgft render --backend k8s ... | kubectl create -f -"


def submit(spec: JobSpec) -> int:
    raise SubmitError(f"submitting to k8s is not implemented in this version yet; "
                      f"render the job and submit it yourself: {HOW}")
