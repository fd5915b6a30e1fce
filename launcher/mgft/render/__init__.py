"""Renderers: pure functions from a `JobSpec` to the text a backend submits."""

from __future__ import annotations

from mgft.spec.job import Backend, JobSpec, K8sApi


def render(spec: JobSpec, visible: tuple[str, ...] | None = None) -> str:
    """What `mgft render` prints and `mgft submit` submits for this spec (`visible`: the
    GPUs chosen on this machine for a local job)."""
    if spec.backend is Backend.K8S:
        if spec.k8s.api is K8sApi.TRAINJOB:
            from mgft.render.trainjob import render_trainjob
            return render_trainjob(spec)
        from mgft.render.pytorchjob import render_pytorchjob
        return render_pytorchjob(spec)
    if spec.backend is Backend.SLURM:
        from mgft.render.sbatch import render_sbatch
        return render_sbatch(spec)
    from mgft.render.local import render_local
    return render_local(spec, visible)
