"""What one LoRA adapter's dropout costs per training step, three ways: peft's modules
(dropout output and mask stored), the trainer's fold (mgft_train.lora_dropout: recomputed in
the backward pass by an autograd.Function) and the same fold through torch.utils.checkpoint
(how the first version recomputed it). Per adapter: the wall time of a forward and backward,
with the GPU synchronized once per --repeat calls, so small shapes measure the CPU's cost of
launching the work (which a step pays 224 times at 8B) and large ones the GPU's.

    python bench/lora_dropout_cost.py --out lora_dropout_cost.json [--cpu] [--repeat 200]

Prints a table and writes JSON (device, torch version, microseconds per call).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / d) for d in ("trainer", "launcher")]
from mgft_train import lora_dropout  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

P, RANK = 0.05, 16
# (tokens, width): a tiny shape (launch-bound: the CPU's cost), Llama-3-8B's two input widths
# at 4 packs of 1024 tokens
SHAPES = [(8, 64), (4096, 4096), (4096, 14336)]


def ways(width: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    def linear() -> torch.nn.Linear:
        return torch.nn.Linear(width, RANK, bias=False, device=device, dtype=dtype)

    stored, dropout = linear(), torch.nn.Dropout(P)
    folded = linear()
    folded.__class__ = lora_dropout.RecomputedDropoutLinear
    folded.p = P
    checkpointed = linear()

    def dropped(x: torch.Tensor) -> torch.Tensor:
        return checkpointed(torch.nn.functional.dropout(x, P, True))

    return {"peft (stored)": lambda x: stored(dropout(x)),
            "fold (autograd.Function)": folded,
            "fold (torch.utils.checkpoint)":
                lambda x: checkpoint(dropped, x, use_reentrant=False, preserve_rng_state=True)}


def timed(fn: Any, x: torch.Tensor, device: torch.device, repeat: int) -> float:
    """Microseconds per forward + backward, the median of 5 rounds of `repeat` calls."""
    def step() -> None:
        fn(x).sum().backward()

    rounds = []
    for _ in range(6):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeat):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rounds.append((time.perf_counter() - start) / repeat * 1e6)
    return sorted(rounds[1:])[2]  # the first round warms up


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cpu", action="store_true", help="on the CPU even where CUDA exists")
    p.add_argument("--repeat", type=int, default=200)
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    shapes = SHAPES if cuda else SHAPES[:1]  # a CPU measures its own launch cost only
    rows = []
    for tokens, width in shapes:
        x = torch.randn(tokens, width, device=device, dtype=dtype, requires_grad=True)
        for name, fn in ways(width, device, dtype).items():
            rows.append({"tokens": tokens, "width": width, "way": name,
                         "us_per_call": timed(fn, x, device, args.repeat)})
    name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    record = {"device": name, "dtype": str(dtype), "torch": torch.__version__, "p": P,
              "rank": RANK, "repeat": args.repeat, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{name}, {dtype}, torch {torch.__version__}: µs per adapter, forward + backward")
    print(f"{'tokens x width':>16}  {'way':<32}{'µs':>10}")
    for r in rows:
        print(f"{r['tokens']:>7} x {r['width']:<6}  {r['way']:<32}{r['us_per_call']:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
