"""Models larger than one GPU's bf16 memory, trained a few steps from random weights: tokens/s
per GPU, MFU and peak memory per GPU next to `mgft plan`'s prediction for the same job.

    python bench/large_models.py --out OUT --runs 32b-lora-1g,70b-qlora-1g     (one H200)
    python bench/large_models.py --out OUT --runs 70b-qlora-fsdp-2g           (2 x H200)
    python bench/large_models.py --out OUT --runs 70b-lora-fsdp-4g            (4 x H200)
    python bench/large_models.py --out OUT --runs 70b-lora-fsdp-8g            (8 x H200)
    python bench/large_models.py --tiny --out OUT                             (CPU plumbing)

Every run is `mgft submit --backend local --random-init`: no checkpoint is read or written
(a 70B model is 140 GB in bf16, more than these machines' disks), and QLoRA's 4-bit base is
built and quantized one module at a time. Rows are packed to --seq-len. MFU counts model
FLOPs (bench/perf_runs.flops_per_token; recomputation not counted) against the H200's
measured 790 TFLOP/s of dense bf16. Writes OUT/large-models.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_assets import GPU_SAFE_ENV, model_config, training_rows  # noqa: E402
from perf_runs import flops_per_token, mean_context  # noqa: E402
from plan_accuracy import predict  # noqa: E402

PEAK_FLOPS = 790e12  # H200 dense bf16, measured (bench/perf_matmul.py)
GIB = 2**30


@dataclass(frozen=True)
class Run:
    name: str
    arch: str
    tuning: str
    strategy: str
    gpus: int
    micro_batch: int = 1
    seq_len: int = 4096
    checkpointing: bool = True


RUNS = {r.name: r for r in (
    # One H200: the largest LoRA model the plan fits (bf16 32B is 61 GiB of weights) and
    # 70B QLoRA, which the plan fits on one GPU with checkpointing.
    Run("32b-lora-1g", "qwen2.5-32b", "lora", "ddp", 1),
    Run("70b-qlora-1g", "llama-3-70b", "qlora", "ddp", 1),
    # Two H200s: the 4-bit base sharded by FSDP2 (each GPU holds half), micro-batch 2.
    Run("70b-qlora-fsdp-2g", "llama-3-70b", "qlora", "fsdp", 2, micro_batch=2),
    # Four H200s: 70B LoRA, bf16 base sharded by FSDP2.
    Run("70b-lora-fsdp-4g", "llama-3-70b", "lora", "fsdp", 4),
    # Eight H200s: the same, for its scaling from four.
    Run("70b-lora-fsdp-8g", "llama-3-70b", "lora", "fsdp", 8),
)}
TINY = (Run("tiny-qlora", "tiny", "qlora", "ddp", 0, micro_batch=2, seq_len=128),
        Run("tiny-qlora-fsdp", "tiny", "qlora", "fsdp", 0, micro_batch=2, seq_len=128))


def command(run: Run, model_dir: Path, data: Path, out: Path, steps: int) -> list[str]:
    procs = ["--gpus", "0", "--nproc-per-node", "2"] if run.gpus == 0 else [
        "--gpus", str(run.gpus)]
    return [sys.executable, "-m", "mgft.cli", "submit", "--backend", "local", *procs,
            "--strategy", run.strategy, "--tuning", run.tuning, "--model", str(model_dir),
            "--dataset", str(data), "--output", str(out), "--max-steps", str(steps),
            "--micro-batch", str(run.micro_batch), "--seq-len", str(run.seq_len),
            "--random-init", "--save", "none", "--lr", "1e-4",
            *(["--activation-checkpointing"] if run.checkpointing else [])]


def one(run: Run, work: Path, steps: int, timeout: float) -> dict[str, Any]:
    from mgft.plan.arch import resolve

    tiny = run.gpus == 0
    model_dir = model_config(run.arch, work / f"model-{run.arch}")
    data = training_rows(model_dir, work / f"rows-{run.arch}-{run.seq_len}.jsonl",
                         64 if tiny else 96 * max(run.gpus, 1) * run.micro_batch,
                         run.seq_len, spread=(0.05, 0.5))
    out = work / "runs" / run.name
    shutil.rmtree(out, ignore_errors=True)  # this bench's own output of an earlier invocation
    fields = {"arch": str(model_dir), "tuning": run.tuning, "dtype": "fp32" if tiny else "bf16",
              "micro_batch": run.micro_batch, "seq_len": run.seq_len,
              "gpus_per_node": 2 if tiny else run.gpus, "kernels": "auto", "packing": True,
              "checkpointing": run.checkpointing}
    row: dict[str, Any] = {"run": asdict(run),
                           "predicted": predict(fields, run.strategy, cpu=tiny)}
    env = os.environ | GPU_SAFE_ENV | {"PYTHONUNBUFFERED": "1"}
    if tiny:
        env |= {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    start = time.monotonic()
    proc = subprocess.run(command(run, model_dir, data, out, steps), env=env,
                          capture_output=True, text=True, timeout=timeout)
    row |= {"exit": proc.returncode, "wall_s": round(time.monotonic() - start, 1)}
    if proc.returncode != 0:
        return row | {"log_tail": (proc.stdout + proc.stderr)[-3000:]}
    m = json.loads((out / "metrics.json").read_text())
    world = m["world_size"]
    per_gpu = m["tokens_per_s_after_warmup"] / world
    arch = resolve(str(model_dir))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lengths = [len(tokenizer(json.loads(line)["output"])["input_ids"]) for line in data.open()]
    flops = flops_per_token(arch, "full" if run.tuning == "full" else "lora", 16,
                            context=mean_context(lengths))
    return row | {"tokens_per_s_per_gpu": per_gpu,
                  "mfu": per_gpu * flops["total"] / PEAK_FLOPS,
                  "peak_gib_per_gpu": m["peak_memory_bytes"] / GIB,
                  "predicted_peak_gib": row["predicted"]["peak"] / GIB,
                  "peak_error": (row["predicted"]["peak"] - m["peak_memory_bytes"])
                  / m["peak_memory_bytes"],
                  "losses": m["losses"], "strategy_ran": m["strategy"],
                  "quantized_bytes": m.get("quantized_bytes"),
                  "attention_kernels": m.get("attention_kernels"), "params": m["total_params"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--runs", default="32b-lora-1g,70b-qlora-1g")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--timeout", type=float, default=540)
    args = p.parse_args(argv)
    runs = TINY if args.tiny else tuple(RUNS[n] for n in args.runs.split(",") if n)
    steps = args.steps or (3 if args.tiny else 8)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "work"
    rows = []
    for run in runs:
        rows.append(one(run, work, steps, args.timeout))
        r = rows[-1]
        if r["exit"] == 0:
            print(f"{run.name:20} {r['tokens_per_s_per_gpu']:>9,.0f} tok/s/GPU  "
                  f"MFU {r['mfu']:.1%}  peak {r['peak_gib_per_gpu']:.1f} GiB (plan "
                  f"{r['predicted_peak_gib']:.1f}, {r['peak_error']:+.0%})  loss "
                  f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}", flush=True)
        else:
            print(f"{run.name:20} exit {r['exit']}: {r['log_tail'][-300:]}", flush=True)
    (args.out / "large-models.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "steps": steps, "rows": rows}, indent=1) + "\n")
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
