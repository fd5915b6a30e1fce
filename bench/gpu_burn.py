"""Keep one GPU busy for the GPU-selection proof: hold memory and run bf16 matmuls until told
to stop. Run with CUDA_VISIBLE_DEVICES naming one GPU (and CUDA_DEVICE_ORDER=PCI_BUS_ID).

    python bench/gpu_burn.py --gib 20 --ready /tmp/ready0 --stop /tmp/stop
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--gib", type=float, default=20)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--ready", type=Path, required=True)
    p.add_argument("--stop", type=Path, required=True)
    args = p.parse_args()
    dev = torch.device("cuda", 0)
    hold = torch.empty(int(args.gib * (1 << 30)), dtype=torch.uint8, device=dev)
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    end = time.time() + args.seconds
    step = 0
    while time.time() < end and not args.stop.exists():
        for _ in range(20):
            a = (a @ b).clamp_(-1, 1)
        torch.cuda.synchronize(dev)
        step += 1
        if step == 1:
            args.ready.write_text(str(hold.numel()))


if __name__ == "__main__":
    main()
