"""metrics.json: what ran, and how it went, as measured rather than as requested.

Its presence marks a finished run: a rerun with the same --output is refused, while an
output with checkpoints and no metrics.json is resumed.

Losses measured without training: `eval` is the held-out eval (None without an eval set),
`reload_check_loss` the trained model's loss on the first samples it trained on, for
checking a reloaded adapter or merged model (mgft_train.evaluate). No key named eval holds a
loss on training rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from mgft.spec.job import TrainSpec

from mgft_train import attention, quant, rates
from mgft_train.checkpoint import spec_record
from mgft_train.data import EvalSet
from mgft_train.distributed import Dist
from mgft_train.loop import TrainResult
from mgft_train.parallel.detect import strategy_that_ran, unwrap
from mgft_train.versions import versions

FILENAME = "metrics.json"
GiB = 1024**3


def collect(spec: TrainSpec, ctx: Dist, model: torch.nn.Module, result: TrainResult,
            loaded: dict[str, Any], *, peak_memory: list[dict[str, Any]] | None = None,
            reload_check_loss: float | None = None, eval_set: EvalSet | None = None,
            saved: dict[str, Path] | None = None, restart_count: int = 0,
            precision: dict[str, Any] | None = None) -> dict[str, Any]:
    """`model` is the object the loop trained (the engine's model): it is inspected, not
    trusted, for the strategy that ran. `loaded` is model.describe() of the model as loaded."""
    # Throughput of this process's steps: a resumed run's earlier steps ran elsewhere.
    run_s = result.run_elapsed_s or result.elapsed_s
    run_tokens = result.run_tokens or result.tokens
    tokens_per_s = run_tokens / run_s if run_s > 0 else 0.0
    strategy, evidence = strategy_that_ran(model)
    peaks = peak_memory or []
    return {
        "world_size": ctx.world_size,
        "backend": ctx.backend,
        "strategy": strategy,
        "strategy_evidence": evidence,
        "model_wrapper": type(model).__name__,
        "model_class": type(unwrap(model)).__name__,
        "device": ctx.device.type,
        "tuning": spec.tuning.value,
        "quantization": loaded["quantization"],
        "quantized_bytes": quant.held_bytes(model),  # this rank's 4-bit weights, and all
        "kernels": loaded["kernels"],
        "attention": loaded["attention"],
        # which kernels the packed attention ran, each with why (a slower one says so)
        "attention_kernels": attention.used(),
        "activation_checkpointing": loaded["activation_checkpointing"],
        "precision": precision,  # precision.describe: weights, master, compute, states
        "steps": result.steps,
        "first_loss": result.losses[0],
        "last_loss": result.losses[-1],
        "losses": result.losses,
        "eval": evaluation(spec, eval_set, result),
        "reload_check_loss": reload_check_loss,
        "tokens": result.tokens,
        "tokens_per_s": tokens_per_s,
        "tokens_per_s_per_gpu_or_proc": tokens_per_s / ctx.world_size,
        "tokens_per_s_after_warmup": rates.steady_tokens_per_s(result.step_s, result.step_tokens),
        "tokens_per_s_median_step": rates.median_tokens_per_s(result.step_s, result.step_tokens),
        "peak_memory_bytes": max((p["bytes"] for p in peaks), default=0),
        "peak_memory_per_device": peaks,
        "elapsed_s": result.elapsed_s,
        "first_step_at": result.first_step_at,
        "step_s": result.step_s,  # this process's steps, each (resumed runs: these only)
        "step_tokens": result.step_tokens,  # real tokens per step, summed over ranks
        "checkpoint_s": result.checkpoint_s,
        "resumed_from_step": result.resumed_from,
        "restart_count": restart_count,
        "trainable_params": loaded["trainable_params"],
        "total_params": loaded["total_params"],
        "saved": {k: str(v) for k, v in (saved or {}).items()},
        "spec": spec_record(spec),
        "versions": versions(),
    }


def evaluation(spec: TrainSpec, eval_set: EvalSet | None,
               result: TrainResult) -> dict[str, Any] | None:
    """The held-out eval set and its loss at each point; `final_loss` is after the last
    step."""
    if eval_set is None:
        return None
    return {
        "source": eval_set.source,
        "samples": len(eval_set.examples),
        "tokens_scored": eval_set.stats.trained_tokens,
        "every": spec.eval_every,
        "points": result.evals,
        "final_loss": result.evals[-1]["loss"] if result.evals else None,
        "elapsed_s": result.eval_s,  # this process's evaluations (resumed runs: these only)
    }


def write(metrics: dict[str, Any], output: str | Path) -> Path:
    path = Path(output) / FILENAME
    tmp = path.with_name(f".{FILENAME}.partial")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def summary(metrics: dict[str, Any]) -> str:
    """The end-of-run lines: what ran, steps, tokens, time, loss, and memory per device."""
    peaks = ", ".join(f"rank {p['rank']} {p['device']} {p['bytes'] / GiB:.2f} GiB"
                      for p in metrics["peak_memory_per_device"])
    saved = ", ".join(f"{k} {v}" for k, v in metrics["saved"].items()) or "nothing"
    resumed = metrics["resumed_from_step"]
    held_out = metrics["eval"]
    return "\n".join([
        f"mgft-train: {metrics['steps']} steps on {metrics['world_size']} x "
        f"{metrics['device']} ({metrics['strategy']}, {metrics['tuning']}), loss "
        f"{metrics['first_loss']:.4f} -> {metrics['last_loss']:.4f}"
        + (f", eval_loss {held_out['final_loss']:.4f} on {held_out['samples']} held-out "
           "samples" if held_out else "")
        + (f" (resumed at step {resumed})" if resumed is not None else ""),
        f"  tokens {metrics['tokens']} in {metrics['elapsed_s']:.1f} s, "
        f"{metrics['tokens_per_s']:.0f} tok/s ({metrics['tokens_per_s_per_gpu_or_proc']:.0f} "
        f"per process)",
        f"  peak memory: {peaks}",
        f"  saved: {saved}",
    ])
