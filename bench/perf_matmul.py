"""Matrix-multiply throughput of each visible GPU in bf16 (fp32 on CPU): the denominator of
bench/perf.py's MFU, measured in the same invocation as the runs it divides.

    CUDA_VISIBLE_DEVICES=0,1,2,3 python bench/perf_matmul.py [--cpu]   (prints one JSON line)

perf.py starts it as a subprocess, so the driver never holds a CUDA context (mgft's GPU
choice counts a GPU with one as busy).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def tflops(device: torch.device, n: int, iters: int, repeats: int) -> float:
    """The best of `repeats` timings of `iters` back-to-back n x n x n products."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):  # cuBLAS heuristics, clocks up
        a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * iters / best / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--n", type=int, default=None, help="matrix size (8192 GPU, 512 CPU)")
    args = p.parse_args()
    if args.cpu or not torch.cuda.is_available():
        n = args.n or 512
        rows = [{"device": "cpu", "name": "cpu", "dtype": "float32",
                 "tflops": tflops(torch.device("cpu"), n, 4, 3)}]
    else:
        n = args.n or 8192
        rows = [{"device": f"cuda:{i}", "name": torch.cuda.get_device_name(i),
                 "dtype": "bfloat16", "tflops": tflops(torch.device("cuda", i), n, 50, 5)}
                for i in range(torch.cuda.device_count())]
    print(json.dumps({"n": n, "devices": rows}))


if __name__ == "__main__":
    main()
