"""Memory configurations measured elsewhere, read for bench/plan_accuracy.py --from-perf.

bench/perf.py's perf.json holds one entry per run; each mgft run carries a flat "config"
(arch, tuning, strategy, gpus, micro_batch, seq_len, kernels, packing,
activation_checkpointing, lora_r) and the measured peak GiB per GPU. Every key is read here
and only here, through ALIASES, so a renamed key (micro-batch, world_size, peak_gib_max...)
still reads; a run without what the plan needs is reported as skipped, not guessed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GIB = 2 ** 30
ALIASES: dict[str, tuple[str, ...]] = {
    "arch": ("arch", "model", "architecture"),
    "tuning": ("tuning",),
    "strategy": ("strategy",),
    "gpus": ("gpus", "world_size", "nproc", "gpus_per_node"),
    "nodes": ("nodes",),
    "micro_batch": ("micro_batch", "microbatch", "mb"),
    "grad_accum": ("grad_accum", "gradient_accumulation"),
    "seq_len": ("seq_len", "seqlen", "max_seq_len", "sequence_length"),
    "kernels": ("kernels",),
    "kernels_used": ("kernels_used", "kernels_applied"),
    "packing": ("packing", "packed"),
    "activation_checkpointing": ("activation_checkpointing", "checkpointing",
                                 "gradient_checkpointing", "ckpt"),
    "lora_r": ("lora_r", "lora_rank", "rank"),
    "peak_gib": ("peak_gib_per_gpu", "peak_gib", "peak_gib_max", "measured_peak_gib"),
}
REQUIRED = ("arch", "tuning", "strategy", "gpus", "micro_batch", "seq_len", "peak_gib")
DEFAULTS: dict[str, Any] = {"nodes": 1, "grad_accum": 1, "kernels": "auto", "packing": True,
                            "activation_checkpointing": False, "lora_r": 16}


def _norm(key: str) -> str:
    return key.strip().lower().replace("-", "_").replace(" ", "_")


def read_config(raw: dict[str, Any], fallback: dict[str, Any]) -> dict[str, Any] | str:
    """One run's configuration by canonical name, or why it cannot be predicted. `fallback`:
    the run entry and the file's settings, consulted when the config lacks a key."""
    sources = [{_norm(k): v for k, v in d.items()} for d in (raw, *fallback.values())]
    out: dict[str, Any] = {}
    for name, names in ALIASES.items():
        for source in sources:
            found = next((source[n] for n in names if source.get(n) is not None), None)
            if found is not None:
                out[name] = found
                break
    missing = [k for k in REQUIRED if k not in out]
    if missing:
        return f"no {', '.join(missing)} in its config"
    if isinstance(out["peak_gib"], list):  # a value per GPU: the busiest one
        out["peak_gib"] = max(out["peak_gib"])
    for key, value in DEFAULTS.items():
        out.setdefault(key, value)
    for key in ("packing", "activation_checkpointing"):
        if isinstance(out[key], str):
            out[key] = out[key].strip().lower() in ("1", "true", "yes", "on")
    for key in ("gpus", "nodes", "micro_batch", "grad_accum", "seq_len", "lora_r"):
        out[key] = int(out[key])
    out["peak_bytes"] = float(out.pop("peak_gib")) * GIB
    # what the trainer reported applying (metrics.json "kernels"): no Liger there means
    # liger-kernel was missing, whatever --kernels asked
    used = out.pop("kernels_used", None)
    out["liger_applied"] = None if used is None else "liger" in str(used)
    return out


def eval_len(settings: dict[str, Any], seq_len: int) -> int:
    """The evaluation pass pads its samples to the longest of the first few: at most the
    data's longest sample ("lengths": "lo-hi" or [lo, hi]), at most --seq-len."""
    lengths = settings.get("lengths")
    try:
        hi = int(lengths[-1]) if isinstance(lengths, list | tuple) else int(
            str(lengths).replace(",", "-").split("-")[-1])
    except (TypeError, ValueError, IndexError):
        return seq_len
    return min(hi, seq_len)


def perf_runs(path: Path) -> list[tuple[str, dict[str, Any] | str]]:
    """(run name, config or why skipped) for every measured run of `path` that is mgft's."""
    data = json.loads(path.read_text())
    settings = data.get("settings") or {}
    out = []
    for entry in data.get("runs", []):
        name = str(entry.get("name", "?"))
        if entry.get("impl", "mgft") != "mgft" or entry.get("status") != "ok":
            continue
        config = read_config(entry.get("config") or {}, {"entry": entry, "settings": settings})
        if isinstance(config, dict):
            config["eval_len"] = eval_len(settings, config["seq_len"])
        out.append((name, config))
    return out
