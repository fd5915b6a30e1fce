"""`mgft doctor [--bandwidth]`: the checks table, then (if asked) the bandwidth sweep."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mgft.doctor import bandwidth as bw
from mgft.doctor.run import Options, exit_code, print_checks, run_checks
from mgft.spec.errors import SpecError


def _rdzv(text: str | None) -> tuple[str, int | None] | None:
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SpecError("--rdzv", text, "is not HOST:PORT", "write e.g. --rdzv node1:29500")
    return host.strip("[]"), int(port)


def doctor_main(*, bandwidth: bool, rdzv: str | None, deadline: float, count: int | None,
                gpu_ids: str | None, cpu_ranks: int | None, fabric: str, sizes: str | None,
                iters: int, warmup: int, json_path: Path | None) -> int:
    results = run_checks(Options(rdzv=_rdzv(rdzv), deadline=deadline))
    print_checks(results)
    code = exit_code(results)
    report: dict[str, Any] = {"checks": [
        {"name": r.name, "status": r.status, "detail": r.detail} for r in results]}
    if bandwidth:
        try:
            result = _sweep(count, gpu_ids, cpu_ranks, fabric, sizes, iters, warmup)
        except RuntimeError as err:
            print(f"mgft: error: {err}", file=sys.stderr)
            return 1
        bw.print_result(result)
        report["bandwidth"] = result
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    return code


def _sweep(count: int | None, gpu_ids: str | None, cpu_ranks: int | None, fabric: str,
           sizes: str | None, iters: int, warmup: int) -> dict[str, Any]:
    if sizes is not None:
        try:
            bw.parse_sizes(sizes)
        except ValueError as err:
            raise SpecError("--sizes", sizes, str(err), "write e.g. --sizes 1M,16M,1G") from None
    if cpu_ranks is None:
        picked = _gpus(count, gpu_ids)
        if picked is not None:
            return bw.run_local(nproc=len(picked), device="cuda",
                                       sizes=sizes or bw.GPU_SIZES, iters=iters,
                                       warmup=warmup, fabric=fabric, visible=picked)
        print("mgft: no GPU here: measuring 2 CPU ranks with gloo (--cpu N for more)",
              file=sys.stderr)
        cpu_ranks = 2
    return bw.run_local(nproc=cpu_ranks, device="cpu", sizes=sizes or bw.CPU_SIZES,
                               iters=iters, warmup=warmup, fabric="auto", visible=None)


def _gpus(count: int | None, gpu_ids: str | None) -> tuple[str, ...] | None:
    """The GPUs to sweep: as asked, else every free one. None: no GPU here, none asked."""
    from mgft.contract.env import visible_devices
    from mgft.hw import gpus, nvml

    ids = [p.strip() for p in gpu_ids.split(",") if p.strip()] if gpu_ids else None
    try:
        inv = nvml.inventory()
    except nvml.NvmlUnavailable as err:
        if count or ids:
            raise gpus.NoGpuDriver("--gpus", count or gpu_ids, f"no NVIDIA GPU can be seen "
                                   f"here ({err})", "use --cpu 2 to measure gloo on CPU") from None
        return None
    within = visible_devices()
    if count is None and ids is None:
        count = sum(1 for d in gpus.visible_pool(inv, within) if not gpus.busy_reasons(d))
        if count < 2:
            raise SpecError("--bandwidth", f"{count} free GPU(s)", "an all-reduce needs 2 GPUs "
                            "or more", "free some GPUs, name them with --gpu-ids, or use --cpu 2")
    choice = gpus.choose(inv, count=count or len(ids or []), ids=ids, within=within)
    for warning in choice.warnings:
        print(f"mgft: warning: {warning}", file=sys.stderr)
    print(f"mgft: bandwidth on {choice.summary()}", file=sys.stderr)
    return choice.visible
