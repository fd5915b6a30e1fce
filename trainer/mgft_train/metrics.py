"""metrics.json: what ran, and how it went, as measured rather than as requested."""

from __future__ import annotations

import dataclasses
import json
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from mgft.spec import TrainSpec

from mgft_train.distributed import Dist
from mgft_train.loop import TrainResult
from mgft_train.parallel import strategy_that_ran, unwrap


def collect(spec: TrainSpec, ctx: Dist, model: torch.nn.Module, result: TrainResult,
            trainable_params: int, total_params: int) -> dict[str, Any]:
    tokens_per_s = result.tokens / result.elapsed_s if result.elapsed_s > 0 else 0.0
    return {
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "strategy": strategy_that_ran(model),
        "model_wrapper": type(model).__name__,
        "model_class": type(unwrap(model)).__name__,
        "device": ctx.device.type,
        "tuning": spec.tuning.value,
        "steps": result.steps,
        "first_loss": result.losses[0],
        "last_loss": result.losses[-1],
        "losses": result.losses,
        "tokens": result.tokens,
        "tokens_per_s": tokens_per_s,
        "tokens_per_s_per_gpu_or_proc": tokens_per_s / ctx.world_size,
        "peak_memory_bytes": result.peak_memory_bytes,
        "elapsed_s": result.elapsed_s,
        "trainable_params": trainable_params,
        "total_params": total_params,
        "spec": dataclasses.asdict(spec),
        "versions": {name: version(name) for name in ("torch", "transformers", "peft")},
    }


def write(metrics: dict[str, Any], output: str | Path) -> Path:
    path = Path(output) / "metrics.json"
    tmp = path.with_name(".metrics.json.partial")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def summary(metrics: dict[str, Any], saved: Path) -> str:
    return (f"mgft-train: {metrics['steps']} steps on {metrics['world_size']} x "
            f"{metrics['device']} ({metrics['strategy']}), loss {metrics['first_loss']:.4f} -> "
            f"{metrics['last_loss']:.4f}, {metrics['tokens_per_s']:.0f} tok/s; saved {saved}")
