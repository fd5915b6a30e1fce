from __future__ import annotations

import json

import pytest
import torch
from mgft.spec.job import TrainSpec
from mgft_train import metrics, rates
from mgft_train.distributed import Dist
from mgft_train.loop import TrainResult

REQUIRED = {"world_size", "backend", "strategy", "strategy_evidence", "model_wrapper", "device",
            "tuning", "quantization", "steps", "first_loss", "last_loss", "losses", "eval",
            "reload_check_loss",
            "tokens", "tokens_per_s", "tokens_per_s_per_gpu_or_proc",
            "tokens_per_s_after_warmup", "tokens_per_s_median_step", "peak_memory_bytes",
            "kernels", "attention", "activation_checkpointing", "first_step_at",
            "peak_memory_per_device", "elapsed_s", "resumed_from_step", "restart_count",
            "trainable_params", "total_params", "saved", "spec", "versions"}
CTX = Dist(rank=0, local_rank=0, world_size=2, device=torch.device("cpu"), backend="gloo")
LOADED = {"trainable_params": 6, "total_params": 10, "quantization": None,
          "kernels": ["liger:rms_norm"], "attention": "sdpa", "activation_checkpointing": False}
PEAKS = [{"rank": 0, "device": "cpu", "bytes": 2 * 1024**3},
         {"rank": 1, "device": "cpu", "bytes": 1024**3}]


def result(**kw) -> TrainResult:
    fields = dict(steps=3, losses=[3.0, 2.0, 1.5], tokens=1000, elapsed_s=4.0, run_tokens=1000,
                  run_elapsed_s=4.0, step_s=[2.0, 1.0, 1.0], step_tokens=[200, 400, 400])
    return TrainResult(**(fields | kw))


def test_metrics_report_what_ran_and_rates(tmp_path):
    spec = TrainSpec(model="m", dataset="d", max_steps=3)
    report = metrics.collect(spec, CTX, torch.nn.Linear(2, 2), result(), LOADED,
                             peak_memory=PEAKS, reload_check_loss=1.25)

    path = metrics.write(report, tmp_path)

    loaded = json.loads(path.read_text())
    assert loaded.keys() >= REQUIRED
    assert loaded["strategy"] == "single"  # a bare module is no DDP, whatever the spec asked
    assert loaded["model_wrapper"] == "Linear"
    assert loaded["kernels"] == ["liger:rms_norm"] and loaded["attention"] == "sdpa"
    assert (loaded["first_loss"], loaded["last_loss"]) == (3.0, 1.5)
    assert loaded["reload_check_loss"] == 1.25
    # No eval set: nothing named eval holds a number (the reload check is on training rows).
    assert loaded["eval"] is None and [k for k in loaded if k.startswith("eval")] == ["eval"]
    assert loaded["tokens_per_s"] == 250.0
    assert loaded["tokens_per_s_per_gpu_or_proc"] == 125.0
    assert loaded["peak_memory_bytes"] == 2 * 1024**3
    assert loaded["spec"]["strategy"] == "ddp" and loaded["spec"]["max_steps"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_the_held_out_eval_records_its_set_every_point_and_the_final_loss():
    from mgft_train.data import EvalSet, Example
    from mgft_train.data.encode import EncodeStats

    stats = EncodeStats(samples=2, truncated=0, dropped_long=0, dropped_untrained=0, tokens=9,
                        trained_tokens=5)
    held = EvalSet(examples=[Example([1, 2], [-100, 2])] * 2, source="--eval-dataset e.jsonl",
                   stats=stats)
    points = [{"step": 2, "loss": 2.5}, {"step": 3, "loss": 2.25}]
    spec = TrainSpec(model="m", dataset="d", eval_dataset="e.jsonl", eval_every=2)
    report = metrics.collect(spec, CTX, torch.nn.Linear(2, 2), result(evals=points, eval_s=0.5),
                             LOADED, eval_set=held)
    assert report["eval"] == {"source": "--eval-dataset e.jsonl", "samples": 2,
                              "tokens_scored": 5, "every": 2, "points": points,
                              "final_loss": 2.25, "elapsed_s": 0.5}
    assert metrics.summary(report).splitlines()[0].endswith(
        "loss 3.0000 -> 1.5000, eval_loss 2.2500 on 2 held-out samples")


def test_throughput_of_a_resumed_run_counts_only_its_own_steps():
    report = metrics.collect(TrainSpec(model="m", dataset="d"), CTX, torch.nn.Linear(2, 2),
                             result(tokens=5000, elapsed_s=40.0, resumed_from=10), LOADED)
    assert report["tokens"] == 5000
    assert report["tokens_per_s"] == 250.0  # 1000 tokens in this run's 4 s
    assert report["resumed_from_step"] == 10


def test_steady_and_median_throughput_drop_slow_first_steps():
    r = result(step_s=[10.0] + [1.0] * 9, step_tokens=[100] * 10)
    assert rates.steady_tokens_per_s(r.step_s, r.step_tokens) == pytest.approx(100.0)  # 2 of 10 out
    assert rates.median_tokens_per_s(r.step_s, r.step_tokens) == pytest.approx(100.0)
    assert rates.median_tokens_per_s([], []) is None


def test_end_of_run_summary_names_steps_tokens_time_memory_per_device_and_saves():
    report = metrics.collect(TrainSpec(model="m", dataset="d"), CTX, torch.nn.Linear(2, 2),
                             result(), LOADED, peak_memory=PEAKS,
                             saved={"adapter": "/o/adapter"})
    lines = metrics.summary(report).splitlines()
    assert lines[0] == "mgft-train: 3 steps on 2 x cpu (single, lora), loss 3.0000 -> 1.5000"
    assert lines[1] == "  tokens 1000 in 4.0 s, 250 tok/s (125 per process)"
    assert lines[2] == "  peak memory: rank 0 cpu 2.00 GiB, rank 1 cpu 1.00 GiB"
    assert lines[3] == "  saved: adapter /o/adapter"
