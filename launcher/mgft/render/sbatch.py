"""A standalone sbatch script: one torchrun per node, c10d rendezvous on the first node.

The same values as `mgft submit --backend slurm` hands to submitit
(mgft.backends.slurm.options), and the same per-node task (mgft.node.slurm), so the script is
what would be submitted.
"""

from __future__ import annotations

from mgft import __version__
from mgft.backends.slurm import options
from mgft.contract.process import job_env
from mgft.node import slurm as node
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
        port_base=node.RDZV_PORT_BASE,
        port_span=node.RDZV_PORT_SPAN,
        srun_options=options.srun_options(spec),
        exec_prefix=options.exec_prefix(spec),
        node_module=options.NODE_MODULE,
        torchrun_options=options.torchrun_options(spec),
        after=options.torchrun_after(spec),
    )
