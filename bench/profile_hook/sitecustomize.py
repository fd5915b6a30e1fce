"""A kernel-level profile of a few training steps, with the trainer unchanged: put this
directory on PYTHONPATH and set MGFT_BENCH_PROFILE_DIR. Each trainer worker (torchrun sets
LOCAL_RANK) profiles its optimizer steps FIRST..FIRST+COUNT-1 (forward and backward; a
DeepSpeed step happens inside backward) with torch.profiler, and writes the top operators by
GPU time and by CPU time to $MGFT_BENCH_PROFILE_DIR/rank<N>.txt.

    PYTHONPATH=bench/profile_hook:$PYTHONPATH MGFT_BENCH_PROFILE_DIR=/tmp/prof mgft submit ...
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

OUT = os.environ.get("MGFT_BENCH_PROFILE_DIR")
FIRST, COUNT = 6, 3  # after warm-up, as the steady throughput figure


def _wrap(module) -> None:
    train_step = module.train_step
    state = {"calls": 0, "prof": None}

    def profiled(engine, batches, ctx, stop_requested=False):
        import torch
        from torch.profiler import ProfilerActivity, profile

        state["calls"] += 1
        if state["calls"] == FIRST:
            gpu = [ProfilerActivity.CUDA] if torch.cuda.is_available() else []
            state["prof"] = profile(activities=[ProfilerActivity.CPU, *gpu])
            state["prof"].__enter__()
        result = train_step(engine, batches, ctx, stop_requested)
        if state["calls"] == FIRST + COUNT - 1 and state["prof"] is not None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            prof, state["prof"] = state["prof"], None
            prof.__exit__(None, None, None)
            table = prof.key_averages()
            text = [f"rank {ctx.rank}: steps {FIRST}..{FIRST + COUNT - 1}"]
            if torch.cuda.is_available():
                text += ["== by GPU time", table.table(sort_by="cuda_time_total", row_limit=25)]
            text += ["== by CPU time", table.table(sort_by="cpu_time_total", row_limit=25)]
            Path(OUT).mkdir(parents=True, exist_ok=True)
            Path(OUT, f"rank{ctx.rank}.txt").write_text("\n".join(text) + "\n")
        return result

    module.train_step = profiled


if OUT and "LOCAL_RANK" in os.environ:
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # bench/: import_hook
    from import_hook import wrap_after_import

    wrap_after_import({"mgft_train.loop": _wrap})
