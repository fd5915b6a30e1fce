"""A standalone sbatch script: one torchrun per node, c10d rendezvous on the first node."""

from __future__ import annotations

from mgft import __version__
from mgft.render.common import job_env, render_template, trainer_argv
from mgft.spec import JobSpec

CPUS_PER_GPU = 8


def render_sbatch(spec: JobSpec) -> str:
    gpus = spec.resources.gpus
    cpus = spec.slurm.cpus_per_task or max(CPUS_PER_GPU * gpus, 2 * spec.nproc_per_node)
    # #SBATCH values are not shell words: the spec rules restrict name, partition and time
    # to characters that need no quoting there.
    return render_template(
        "sbatch.sh.j2",
        version=__version__,
        name=spec.job_name,
        nodes=spec.resources.nodes,
        gpus=gpus,
        cpus_per_task=cpus,
        time=spec.slurm.time,
        partition=spec.slurm.partition,
        env=list(job_env(spec).items()),
        nproc_per_node=spec.nproc_per_node,
        trainer_argv=trainer_argv(spec),
    )
