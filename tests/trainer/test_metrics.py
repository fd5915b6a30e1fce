from __future__ import annotations

import json
from pathlib import Path

import torch
from mgft.spec import TrainSpec
from mgft_train import metrics
from mgft_train.distributed import Dist
from mgft_train.loop import TrainResult

REQUIRED = {"world_size", "backend", "strategy", "model_wrapper", "device", "tuning", "steps",
            "first_loss", "last_loss", "losses", "tokens", "tokens_per_s",
            "tokens_per_s_per_gpu_or_proc", "peak_memory_bytes", "elapsed_s", "trainable_params",
            "total_params", "spec"}


def test_metrics_report_what_ran_and_rates(tmp_path):
    ctx = Dist(rank=0, local_rank=0, world_size=2, device=torch.device("cpu"), backend="gloo")
    result = TrainResult(steps=3, losses=[3.0, 2.0, 1.5], tokens=1000, elapsed_s=4.0,
                         peak_memory_bytes=123)
    spec = TrainSpec(model="m", dataset="d", max_steps=3)
    report = metrics.collect(spec, ctx, torch.nn.Linear(2, 2), result, 6, 10)

    path = metrics.write(report, tmp_path)

    loaded = json.loads(path.read_text())
    assert loaded.keys() >= REQUIRED
    assert loaded["strategy"] == "single"  # a bare module is no DDP, whatever the spec asked
    assert loaded["model_wrapper"] == "Linear"
    assert (loaded["first_loss"], loaded["last_loss"]) == (3.0, 1.5)
    assert loaded["tokens_per_s"] == 250.0
    assert loaded["tokens_per_s_per_gpu_or_proc"] == 125.0
    assert loaded["spec"]["strategy"] == "ddp" and loaded["spec"]["max_steps"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    line = metrics.summary(report, Path("/o/adapter"))
    assert "3.0000 -> 1.5000" in line and "/o/adapter" in line
