"""Rules for generation jobs, on top of the job rules in `mgft.spec.validate`. Pure: no I/O."""

from __future__ import annotations

from mgft.spec.errors import SpecError
from mgft.spec.job import JobSpec, Strategy

STRATEGIES = (Strategy.DDP, Strategy.MP)


def check_generate(spec: JobSpec) -> None:
    strategy = spec.train.strategy
    if strategy not in STRATEGIES:
        raise SpecError("--strategy", strategy.value,
                        "generation runs a whole model in every process (ddp) or splits one "
                        "over a node's GPUs (mp); there are no gradients or optimizer to shard",
                        "use --strategy ddp, or mp for a model too big for one GPU")
