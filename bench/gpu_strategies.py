"""Every strategy on a 1.06B Llama-architecture model (random init, built on the GPUs), through
`mgft submit --backend local`: loss, tokens/s per GPU and peak memory, from metrics.json.

Usage (on a GPU host; NCCL_NVLS_ENABLE=0 etc. are taken from the environment):
    python bench/gpu_strategies.py --gpus 2 --runs ddp,fsdp,zero2,zero3,qlora-ddp,mp --out DIR
Writes DIR/gpu_strategies-<gpus>gpu.json and .md, and each run's log and metrics.json under
DIR/runs/; the runs' own outputs (checkpoints, adapters) and the assets go under --work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# name -> (strategy, tuning)
RUNS = {"ddp": ("ddp", "lora"), "fsdp": ("fsdp", "lora"), "zero2": ("zero2", "lora"),
        "zero3": ("zero3", "lora"), "qlora-ddp": ("ddp", "qlora"), "mp": ("mp", "lora"),
        "zero3-offload": ("zero3-offload", "lora")}
GiB = 1024**3


def assets(root: Path, preset: str, weights: bool) -> Path:
    out = root / (f"{preset}-weights" if weights else preset)
    if not (out / "data.jsonl").exists():
        subprocess.run([sys.executable, "-m", "mgft_train.demo_assets", "--out", str(out),
                        "--preset",
                        preset, "--rows", "1024", "--force",
                        "--weights" if weights else "--no-weights"], check=True)
    return out


def run(name: str, gpus: int, args: argparse.Namespace) -> dict:
    strategy, tuning = RUNS[name]
    qlora = tuning == "qlora"
    data = assets(args.work / "assets", args.preset, weights=qlora)  # qlora quantizes on load
    output = args.work / "runs" / f"{name}-{gpus}gpu"
    cmd = [sys.executable, "-m", "mgft.cli", "submit", "--backend", "local", "--gpus", str(gpus),
           "--strategy", strategy, "--tuning", tuning, "--model", str(data / "model"),
           "--dataset", str(data / "data.jsonl"), "--output", str(output),
           "--max-steps", str(args.steps), "--seq-len", "512", "--micro-batch", "4",
           "--lr", args.lr, "--save-every", "1000",
           "--no-random-init" if qlora else "--random-init",
           # Padded batches, like the 2-GPU table these runs extend.
           "--no-packing",
           # --gpus 0 (a CPU smoke test of this script): two processes, as on two GPUs.
           *(["--nproc-per-node", "2"] if gpus == 0 else [])]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        code, log = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        code, log = "timeout", f"{err.stdout or ''}{err.stderr or ''}"
    wall = time.perf_counter() - start
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    (args.out / "runs" / f"{name}-{gpus}gpu.log").write_text(str(log)[-200_000:])
    row = {"run": name, "gpus": gpus, "requested": {"strategy": strategy, "tuning": tuning},
           "exit": code, "wall_s": round(wall, 1)}
    metrics_file = output / "metrics.json"
    if code != 0 or not metrics_file.exists():
        row["error_tail"] = str(log)[-1500:]
        return row
    m = json.loads(metrics_file.read_text())
    (args.out / "runs" / f"{name}-{gpus}gpu.metrics.json").write_text(metrics_file.read_text())
    per_gpu = (m["tokens_per_s_after_warmup"] or m["tokens_per_s"]) / max(gpus, 1)
    median = m.get("tokens_per_s_median_step")
    row |= {"ran": m["strategy"], "evidence": m["strategy_evidence"], "world_size": m["world_size"],
            "backend": m["backend"], "steps": m["steps"], "first_loss": m["first_loss"],
            "last_loss": m["last_loss"], "tokens_per_s_per_gpu": per_gpu,
            "median_step_tokens_per_s_per_gpu": median / max(gpus, 1) if median else None,
            "peak_gib_max": m["peak_memory_bytes"] / GiB,
            "peak_gib_per_device": [round(p["bytes"] / GiB, 2)
                                    for p in m["peak_memory_per_device"]],
            "total_params": m["total_params"], "trainable_params": m["trainable_params"],
            "quantization": m["quantization"], "versions": m["versions"]}
    return row


def table(rows: list[dict]) -> str:
    lines = ["| run | GPUs | ran (detected) | loss first → last | tok/s/GPU (mean) | "
             "tok/s/GPU (median step) | peak GiB/GPU |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "ran" not in r:
            lines.append(f"| {r['run']} | {r['gpus']} | failed (exit {r['exit']}) | | | | |")
            continue
        lines.append(f"| {r['run']} | {r['gpus']} | {r['ran']} ({r['backend']}, world "
                     f"{r['world_size']}) | {r['first_loss']:.3f} → {r['last_loss']:.3f} | "
                     f"{r['tokens_per_s_per_gpu']:,.0f} | "
                     f"{_num(r.get('median_step_tokens_per_s_per_gpu'))} | "
                     f"{r['peak_gib_max']:.1f} |")
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def hardware() -> dict:
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True).stdout
    except FileNotFoundError:  # the CPU smoke test
        smi = ""
    return {"gpus": smi.strip().splitlines(), "python": platform.python_version(),
            "host_cpus": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--runs", default="ddp,fsdp,zero2,zero3,qlora-ddp")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--timeout", type=int, default=150, help="seconds per run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="llama-1b", help="mgft_train.demo_assets preset")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mgft-bench"),
                        help="assets and run outputs (large)")
    parser.add_argument("--lr", default="1e-3")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.runs.split(","):
        rows.append(run(name, args.gpus, args))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
        write(rows, args)  # after every run: a later hang still leaves these results
    print(table(rows))


def write(rows: list[dict], args: argparse.Namespace) -> None:
    result = {"model": "Llama architecture, 1.06B parameters (mgft_train.demo_assets --preset "
              "llama-1b), random init; LoRA r=16 on all linear layers",
              "setup": {"steps": args.steps, "seq_len": 512, "micro_batch": 4, "grad_accum": 1,
                        "lr": args.lr,
                        "tokens_per_s": "real (non-pad) tokens, steps after warmup (the first "
                        "fifth, at most 5, excluded)"},
              "hardware": hardware(), "rows": rows}
    stem = args.out / f"gpu_strategies-{args.gpus}gpu"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table(rows))


if __name__ == "__main__":
    main()
