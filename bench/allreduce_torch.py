"""Plain torch all-reduce bus bandwidth, without mgft: the baseline `mgft doctor --bandwidth`
is compared with. bf16, in-place, perf_counter around `iters` calls after `warmup`.

    torchrun --standalone --nproc-per-node 4 bench/allreduce_torch.py --out plain.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

SIZES = [1 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    n = dist.get_world_size()
    rows = []
    for size in SIZES:
        x = torch.zeros(size // 2, dtype=torch.bfloat16, device="cuda")
        for _ in range(args.warmup):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        dist.barrier()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.iters):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        t = torch.tensor([(time.perf_counter() - start) / args.iters], device="cuda",
                         dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        secs = t.item()
        rows.append({"bytes": size, "seconds": secs, "algbw_gbs": size / secs / 1e9,
                     "busbw_gbs": size / secs / 1e9 * 2 * (n - 1) / n})
    if dist.get_rank() == 0:
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
        args.out.write_text(json.dumps({"world_size": n, "torch": torch.__version__,
                                        "nccl": nccl, "results": rows}, indent=2) + "\n")
        for r in rows:
            print(f"{r['bytes']:>12} B  busbw {r['busbw_gbs']:7.1f} GB/s")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
