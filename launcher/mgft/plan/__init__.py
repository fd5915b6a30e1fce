"""`mgft plan`: per-GPU memory estimates for each strategy, and the pick `--strategy auto` uses.
Pure arithmetic on the model's shapes; no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mgft.spec.job import JobSpec


def resolve_auto(spec: JobSpec) -> tuple[JobSpec, str]:
    """`--strategy auto` replaced by what `mgft plan` picks (mgft.plan.auto), imported only
    when a job asks for it: the planner is not needed for every render."""
    from mgft.plan.auto import resolve_auto as resolve

    return resolve(spec)
