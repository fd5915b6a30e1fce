"""Peak memory per device: each GPU a rank used (several under mp), or each process's RSS."""

from __future__ import annotations

import resource
import sys
from typing import Any

import torch

from mgft_train import distributed
from mgft_train.distributed import Dist


def device_peak_bytes(device: torch.device) -> int:
    """The most memory allocated on this GPU so far, or this process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB


def local_peaks(model: torch.nn.Module, ctx: Dist) -> list[dict[str, Any]]:
    if ctx.device.type == "cuda":
        devices = {ctx.device} | {p.device for p in model.parameters() if p.device.type == "cuda"}
        return [{"rank": ctx.rank, "device": str(d), "bytes": device_peak_bytes(d)}
                for d in sorted(devices, key=lambda d: d.index or 0)]
    return [{"rank": ctx.rank, "device": "cpu", "bytes": device_peak_bytes(ctx.device)}]


def peaks(model: torch.nn.Module, ctx: Dist) -> list[dict[str, Any]]:
    """Collective: every rank's devices, in rank order."""
    return [peak for rank_peaks in distributed.gather(local_peaks(model, ctx), ctx)
            for peak in rank_peaks]  # type: ignore[union-attr]
