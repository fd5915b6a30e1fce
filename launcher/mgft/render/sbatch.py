"""A standalone sbatch script: one torchrun per node, c10d rendezvous on the first node.

The same values as `mgft submit --backend slurm` hands to submitit (mgft.render.slurm_job),
and the same per-node task (mgft.node.slurm_task.NodeTask), so the script is what would be
submitted.
"""

from __future__ import annotations

from mgft import __version__
from mgft.contract.process import job_env
from mgft.render import slurm_job as options
from mgft.render.template import render_template
from mgft.spec.job import JobSpec


def render_sbatch(spec: JobSpec) -> str:
    # #SBATCH values are not shell words: mgft.spec.rules.slurm restricts them to characters that
    # need no quoting there.
    return render_template(
        "sbatch.sh.j2",
        version=__version__,
        name=spec.job_name,
        directives=options.directives(spec),
        env=list(job_env(spec).items()),
        srun_options=options.srun_options(spec),
        exec_prefix=options.exec_prefix(spec),
        node_module=options.NODE_MODULE,
        task=options.node_task(spec).to_argv(),
    )
