"""The all-reduce sweep itself, run by every rank under torchrun (this module imports torch).

    torchrun --nproc-per-node 4 -m mgft.doctor.sweep --sizes 1M,16M,256M,1G --out bw.json

`mgft doctor --bandwidth` starts it on this machine; across nodes, start it like the trainer
(one torchrun per node, same rendezvous). The process resolves its fabric preset exactly as
the trainer does (`mgft.comm.fabric.prepare_process`), so it measures what a job would get.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from mgft.doctor.bandwidth import CPU_SIZES, GPU_SIZES, busbw, parse_sizes, print_result


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mgft.doctor.sweep")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    p.add_argument("--sizes", default=None, help=f"GPU default {GPU_SIZES}, CPU {CPU_SIZES}")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", type=Path, default=None, help="rank 0 writes the results here")
    p.add_argument("--quiet", action="store_true", help="no table (the caller prints it)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    import torch
    import torch.distributed as dist

    from mgft.comm import fabric
    from mgft.contract.env import CommEnv, DistEnv

    env, comm = DistEnv.from_env(), CommEnv.from_env()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    resolution, applied = fabric.prepare_process() if cuda else (None, {})
    timeout = timedelta(seconds=comm.timeout_s)
    if cuda:
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=timeout)
    n, rank = dist.get_world_size(), dist.get_rank()
    dtype = torch.bfloat16 if cuda else torch.float32
    _check_sum(device, dtype, n, rank)
    rows = [_measure(size, device, dtype, n, args.warmup, args.iters)
            for size in parse_sizes(args.sizes or (GPU_SIZES if cuda else CPU_SIZES))]
    if rank == 0:
        result = _report(rows, n, env, cuda, dtype, resolution, applied)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        if not args.quiet:
            print_result(result)
    dist.barrier()
    dist.destroy_process_group()
    return 0


def _check_sum(device: Any, dtype: Any, n: int, rank: int) -> None:
    """A wrong sum means a broken transport: fail loudly rather than time garbage."""
    import torch
    import torch.distributed as dist

    x = torch.full((1024,), float(rank + 1), dtype=dtype, device=device)
    dist.all_reduce(x)
    want = n * (n + 1) / 2
    if not bool((x == want).all()):
        raise SystemExit(f"all-reduce returned {x[0].item()} on rank {rank}, expected {want}")


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(size: int, device: Any, dtype: Any, n: int, warmup: int,
             iters: int) -> dict[str, float]:
    import torch
    import torch.distributed as dist

    # Zeros stay zeros however often they are summed: no overflow, same bytes on the wire.
    x = torch.zeros(size // torch.tensor([], dtype=dtype).element_size(), dtype=dtype,
                    device=device)
    for _ in range(warmup):
        dist.all_reduce(x)
    _sync(device)
    dist.barrier()  # every rank starts the timed loop together
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(x)
    _sync(device)
    elapsed = torch.tensor([(time.perf_counter() - start) / iters], dtype=torch.float64,
                           device=device)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
    seconds = float(elapsed.item())
    return {"bytes": size, "seconds": seconds, "algbw_gbs": size / seconds / 1e9,
            "busbw_gbs": busbw(size, seconds, n)}


def _report(rows: list[dict[str, float]], n: int, env: Any, cuda: bool, dtype: Any,
            resolution: Any, applied: dict[str, str]) -> dict[str, Any]:
    import torch

    from mgft.comm import fabric

    result: dict[str, Any] = {
        "host": socket.gethostname(), "world_size": n,
        "nnodes": max(1, n // max(1, env.local_world_size)),
        "backend": "nccl" if cuda else "gloo", "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__, "results": rows, "fabric": None, "expected": None,
    }
    if cuda:
        nccl = torch.cuda.nccl.version()
        result["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
        result["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        result["fabric"] = {"requested": resolution.requested.value,
                            "fabric": resolution.fabric.value if resolution.fabric else None,
                            "reason": resolution.reason, "set": applied}
        facts = fabric.gather(env)
        expected = fabric.expected_busbw(resolution.fabric, facts)
        if expected:
            result["expected"] = {"gbs": expected[0], "basis": expected[1]}
    return result


if __name__ == "__main__":
    sys.exit(main())
