"""What `mgft gpus` and `mgft nccl explain` print (rich tables on stdout)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mgft.spec.job import Fabric, JobSpec

GIB = 1 << 30


def _console() -> Console:
    return Console(width=max(100, Console().width))


def show_gpus(count: int | None, gpu_ids: str | None, exclusive: bool) -> int:
    from mgft.contract.env import DeviceEnv, visible_devices
    from mgft.hw import gpus, nvml

    ids = [p.strip() for p in gpu_ids.split(",") if p.strip()] if gpu_ids else None
    wanted = count or (len(ids) if ids else 0)
    try:
        inv = nvml.inventory()
    except nvml.NvmlUnavailable as err:
        if wanted:
            raise gpus.NoGpuDriver("--gpus", wanted, f"no NVIDIA GPU can be seen here ({err})",
                                   "install the NVIDIA driver and nvidia-ml-py") from None
        print(f"no NVIDIA GPU here ({err}): jobs on this machine run on CPU (--gpus 0)")
        return 0
    within = visible_devices()
    choice = gpus.choose(inv, count=wanted, ids=ids, exclusive=exclusive, within=within) \
        if wanted else None
    pool = set(gpus.visible_pool(inv, within))
    table = Table(title=f"GPUs (driver {inv.driver}, CUDA {inv.cuda_driver})")
    for name in ("gpu", "name", "memory used", "util", "procs", "state", "visible", "chosen"):
        table.add_column(name)
    for d in inv.devices:
        busy = gpus.busy_reasons(d)
        state = "MIG mode" if d.mig_mode else ", ".join(busy) if busy else "idle"
        table.add_row(
            d.label, d.name, f"{d.memory_used / GIB:.1f} / {d.memory_total / GIB:.0f} GiB",
            "-" if d.utilization is None else f"{d.utilization}%", str(d.processes),
            Text(state, style="yellow" if busy else "green"), "yes" if d in pool else "no",
            "yes" if choice and d in choice.devices else "")
    console = _console()
    console.print(table)
    if within is not None:
        console.print(f"within CUDA_VISIBLE_DEVICES={within} (set by the environment)",
                      soft_wrap=True)
    if choice is not None:
        for warning in choice.warnings:
            console.print(Text(f"warning: {warning}", style="yellow"), soft_wrap=True)
        env = " ".join(f"{k}={v}" for k, v in DeviceEnv(visible=choice.visible).to_env().items())
        console.print(f"mgft would run with {env}  ({choice.summary()})", soft_wrap=True)
    return 0


def show_explain(spec: JobSpec, as_json: bool) -> None:
    from mgft.comm import nccl

    rows = nccl.explain(spec)
    if as_json:
        print(json.dumps([{"name": r.var.name, "value": r.var.value, "source": r.source,
                           "why": r.var.why} for r in rows], indent=2))
        return
    table = Table(title=f"environment of every process of {spec.job_name}")
    table.add_column("variable", no_wrap=True)
    for name in ("value", "from", "why"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(r.var.name, Text(r.var.value), r.source, Text(r.var.why))
    console = _console()
    console.print(table)
    console.print("Set at start only where the environment has no value of its own; "
                  "--nccl and --env always win. mgft never sets NCCL_NVLS_ENABLE unless asked.")
    if not spec.on_cpu and spec.dist.fabric is Fabric.AUTO:
        console.print(_preview(spec), soft_wrap=True)


def _preview(spec: JobSpec) -> str:
    """What `auto` would resolve to if this machine were one of the job's nodes."""
    from mgft.comm import fabric
    from mgft.contract.env import DistEnv

    node = DistEnv(world_size=spec.world_size, local_world_size=spec.nproc_per_node)
    res = fabric.resolve(Fabric.AUTO, fabric.gather(node))
    sets = ", ".join(f"{v.name}={v.value}" for v in res.variables) or "nothing"
    name = res.fabric.value if res.fabric else "NCCL's defaults"
    return f"On this machine, as a node of this job, auto resolves to {name} ({res.reason}); " \
           f"it would set {sets}."
