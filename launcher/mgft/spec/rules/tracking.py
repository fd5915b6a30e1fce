"""The --report-to rule, one for the launcher (`mgft.spec.validate`) and for the trainer
(`mgft_train.tracking`), which may be started by hand. Pure: no I/O, no imports of trackers."""

from __future__ import annotations

from collections.abc import Sequence

from mgft.spec.job import JobSpec, Tracker


def report_to_problem(trackers: Sequence[Tracker]) -> tuple[str, str] | None:
    """(problem, fix) for a --report-to list that contradicts itself, or None."""
    if Tracker.NONE in trackers and len(trackers) > 1:
        return ("none cannot be combined with a tracker",
                "pass --report-to none alone, or drop none from the list")
    repeated = sorted({t.value for t in trackers if list(trackers).count(t) > 1})
    if repeated:
        return (f"{', '.join(repeated)} is named twice", "name each tracker once")
    return None


def warnings(spec: JobSpec) -> list[str]:
    """W&B on Kubernetes without a key: rank 0 would fail once the model is loaded."""
    env = spec.env
    if (Tracker.WANDB in spec.train.report_to and spec.k8s.wandb_secret is None
            and "WANDB_API_KEY" not in spec.k8s.secret_env
            and env.get("WANDB_MODE") not in ("offline", "disabled")):
        return ["--report-to wandb without --wandb-secret: the pods have no WANDB_API_KEY; "
                "add --wandb-secret NAME (a Secret with key api-key), or --env WANDB_MODE=offline"]
    return []
