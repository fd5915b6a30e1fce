"""`--strategy auto`: build_spec asks here which strategy to put in its place, and why."""

from __future__ import annotations

import dataclasses

from mgft.plan.arch import KNOWN, Arch, config_path, normalize, resolve
from mgft.plan.memory import GIB, Job
from mgft.plan.pick import Budget, make_plan
from mgft.spec.errors import SpecError
from mgft.spec.job import JobSpec, Strategy


def with_strategy(spec: JobSpec, strategy: Strategy) -> JobSpec:
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, strategy=strategy))


def arch_for(spec: JobSpec) -> Arch:
    """--arch when given; else the model directory when it is readable here; else the model
    directory's name when it names a known architecture (e.g. /models/Meta-Llama-3-8B)."""
    if spec.plan.arch is not None:
        try:
            return resolve(spec.plan.arch)
        except SpecError as err:
            raise SpecError("--arch", spec.plan.arch, err.problem, err.fix) from None
    if config_path(spec.train.model) is not None or normalize(spec.train.model) in KNOWN:
        return resolve(spec.train.model)
    raise SpecError("--strategy", "auto", f"cannot size --model {spec.train.model}: no "
                    "config.json there on this machine and not a known architecture name",
                    "pass --arch with a known name (e.g. llama-3-8b) or a local config.json, "
                    "or pick a strategy")


def host_budget(spec: JobSpec) -> int | None:
    """Bytes of host memory per node: this machine's (local), --mem (Slurm), else unknown
    (K8sSpec has no memory limit to compare with)."""
    from mgft.hw import host_memory
    from mgft.plan.host import slurm_mem_bytes
    from mgft.spec.job import Backend

    if spec.backend is Backend.LOCAL:
        return host_memory.total_bytes()
    if spec.backend is Backend.SLURM:
        return slurm_mem_bytes(spec.slurm.mem)
    return None


def resolve_auto(spec: JobSpec) -> tuple[JobSpec, str]:
    """The spec with a concrete strategy, and one line saying what was chosen and why."""
    if spec.generate is not None:
        return with_strategy(spec, Strategy.DDP), (
            "--strategy auto: ddp (generation runs a whole model in every process)")
    if spec.on_cpu:
        return with_strategy(spec, Strategy.DDP), (
            "--strategy auto: ddp (on CPU there is no GPU memory to plan for)")
    arch = arch_for(spec)
    job = Job.of_spec(spec, arch)
    host = host_budget(spec)
    budget = Budget(gpu_memory_gib=spec.plan.gpu_memory_gib, margin=spec.plan.margin,
                    host_memory_gib=None if host is None else host / GIB)
    # An explicit --nproc-per-node other than 1 rules out mp (one process per node).
    exclude = {Strategy.MP} if spec.resources.nproc_per_node not in (None, 1) else set()
    plan = make_plan(job, budget, exclude=frozenset(exclude))
    if plan.choice is None and any(r.fits for r in plan.rows):
        raise SpecError("--strategy", "auto", plan.reason.split("; ")[0],
                        "use fewer processes per node, --activation-checkpointing, or a "
                        "machine with more memory (see `mgft plan`)")
    if plan.choice is None:
        raise SpecError("--strategy", "auto",
                        f"no strategy fits {arch.name} ({job.tuning.value}) in "
                        f"{budget.usable / GIB:.1f} GiB per GPU at micro-batch "
                        f"{job.micro_batch} and seq-len {job.seq_len}",
                        "lower --micro-batch or --seq-len, use --tuning qlora, add GPUs, or "
                        "set --gpu-memory if the GPUs have more than "
                        f"{budget.gpu_memory_gib:g} GiB (see `mgft plan`)")
    return with_strategy(spec, plan.choice), (
        f"--strategy auto: {plan.choice.value} for {arch.name} {job.tuning.value} on "
        f"{job.world} x {budget.gpu_memory_gib:g} GiB GPUs: {plan.reason}")
