"""Run the checks on this machine, or in a job's process (where the env contract says so)."""

from __future__ import annotations

import resource
from dataclasses import dataclass

from mgft.contract.env import DistEnv, LaunchEnv, comm_vars, visible_devices
from mgft.doctor import checks as c
from mgft.hw import netinfo
from mgft.hw.nvml import Device, Inventory, NvmlUnavailable
from mgft.spec.errors import SpecError


@dataclass(frozen=True, slots=True)
class Options:
    quick: bool = False  # preflight: skip the torch subprocess (the trainer imports torch anyway)
    rdzv: tuple[str, int | None] | None = None  # host, port; in a job: MASTER_ADDR/PORT
    deadline: float = 5.0  # seconds for DNS plus TCP connect


def _inventory() -> tuple[Inventory | None, str | None]:
    from mgft.hw import nvml

    try:
        return nvml.inventory(), None
    except NvmlUnavailable as err:
        return None, str(err)


def run_checks(opts: Options) -> list[c.Check]:
    launch, dist = LaunchEnv.from_env(), DistEnv.from_env()
    in_job = dist.launched
    expect_gpus = in_job and launch.device == "cuda"
    inv, nvml_error = _inventory()
    within = visible_devices()
    visible: list[Device] = []
    results = [c.check_driver(inv, nvml_error, expect_gpus)]
    if inv is not None:
        from mgft.hw.gpus import visible_pool

        try:
            visible = visible_pool(inv, within)
        except SpecError as err:
            results.append(c.Check("gpus", c.FAIL, str(err)))
    info = None
    if not opts.quick:
        info = c.torch_probe()
        results += [c.check_torch(info, inv, expect_gpus), c.check_nccl_version(info)]
    if not any(r.name == "gpus" for r in results):
        nproc = dist.local_world_size if expect_gpus else None
        results.append(c.check_gpus(visible, info, within, expect_gpus, nproc))
    gpu_run = bool(visible) or expect_gpus or bool(info and info.cuda_available)
    results.append(c.check_kernels(c.find_module("liger_kernel", "liger-kernel"),
                                   c.find_module("triton", "triton"), gpu_run))
    ifaces, ports = netinfo.interfaces(), netinfo.rdma_ports()
    free, total = c.shm_sizes()
    host, port = opts.rdzv or ((dist.master_addr, dist.master_port) if in_job else (None, None))
    results += [
        c.check_shm(free, total, len(visible)),
        c.check_ulimits(resource.getrlimit(resource.RLIMIT_MEMLOCK),
                        resource.getrlimit(resource.RLIMIT_NOFILE),
                        rdma=any(p.active for p in ports)),
        c.check_nccl_env(comm_vars(), ifaces, ports),
        c.check_interfaces(ifaces, ports),
        c.check_rendezvous(host, port, opts.deadline),
    ]
    return results


def exit_code(results: list[c.Check]) -> int:
    return 1 if any(r.status == c.FAIL for r in results) else 0


def print_checks(results: list[c.Check], title: str = "mgft doctor", stderr: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    styles = {c.PASS: "green", c.WARN: "yellow", c.FAIL: "bold red"}
    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for r in results:
        table.add_row(r.name, Text(r.status, style=styles[r.status]), Text(r.detail))
    Console(stderr=stderr, width=max(100, Console().width)).print(table)
