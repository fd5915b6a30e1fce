"""A local training job's inputs, checked before torchrun starts, as its trainer will check them.

The trainer finds a finished --output or a bad first row too, but only after torchrun and N
Python processes have started (8-20 s), and behind torchrun's own report. These are the
trainer's own checks (`mgft_train.checks`, which imports no torch), run on the trainer's view
of the job: here they cost milliseconds and end in one line and exit 2.
"""

from __future__ import annotations

import contextlib

from mgft.contract.argv import parse_train, to_argv
from mgft.contract.env import DistEnv
from mgft.hw import host_memory
from mgft.plan import host
from mgft.spec.errors import as_spec_error
from mgft.spec.job import JobSpec


def check(spec: JobSpec) -> host.HostBreakdown | None:
    """Refuse what the trainer or this machine's memory would; return the plan's host memory
    (None when the model's shape is unknown here), for the report of a SIGKILLed worker."""
    if spec.generate is not None:
        return None  # mgft generate checks its own inputs (mgft.generate.launch)
    planned = host.check(spec, host_memory.total_bytes(), "this machine's memory")
    from mgft_train.checks import check_inputs

    train = parse_train(to_argv(spec.train))  # what every rank will parse from its argv
    ranks = DistEnv(world_size=spec.nproc_per_node, local_world_size=spec.nproc_per_node,
                    launched=True)
    # An unreadable checkpoint state is left alone: the trainer names it when it resumes.
    with as_spec_error(), contextlib.suppress(OSError, ValueError, TypeError):
        check_inputs(train, ranks)
    return planned
