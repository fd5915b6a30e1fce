"""bench/plan_accuracy.py --snapshot: record the CUDA allocator's history in each trainer
process, from just before the model loads to when the trainer reads its peaks (after
training and the evaluation pass), and write its summary (bench/memory_snapshot.py) to
$MGFT_BENCH_SNAPSHOT_DIR/rank<N>.json. Only trainer workers (torchrun sets LOCAL_RANK)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

OUT = os.environ.get("MGFT_BENCH_SNAPSHOT_DIR")


def _start(module) -> None:
    load_model = module.load_model

    def recorded(spec, ctx):
        import torch

        if ctx.device.type == "cuda":
            torch.cuda.memory._record_memory_history(max_entries=2_000_000, stacks="python")
        return load_model(spec, ctx)

    module.load_model = recorded


def _stop(module) -> None:
    peaks = module.peaks

    def recorded(model, ctx):
        import torch

        if ctx.device.type == "cuda":
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from memory_snapshot import summarize

            summary = summarize(torch.cuda.memory._snapshot(), ctx.device.index or 0)
            summary["max_memory_allocated"] = torch.cuda.max_memory_allocated(ctx.device)
            Path(OUT, f"rank{ctx.rank}.json").write_text(json.dumps(summary, indent=1) + "\n")
            torch.cuda.memory._record_memory_history(enabled=None)
        return peaks(model, ctx)

    module.peaks = recorded


WRAP = {"mgft_train.model": _start, "mgft_train.memory": _stop}


if OUT and "LOCAL_RANK" in os.environ:
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench/: import_hook
    from import_hook import wrap_after_import

    wrap_after_import(WRAP)
