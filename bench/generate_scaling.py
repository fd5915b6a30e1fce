"""How much faster `mgft generate` gets with more GPUs, on a fixed prompt set.

The same prompts run through `mgft generate --backend local` on 1 GPU and on N GPUs. Every
prompt generates exactly --max-new-tokens tokens (--min-new-tokens is set to it), so each run
does the same work. Reported: the generation phase (the slowest rank's time, from
generation_metrics.json) and the whole command's wall time (process start and model loading
included). Target on 4 x H200: generation phase at least 3.8x faster than 1 GPU.

Defaults: `mgft generate`'s own batch size, and 16 batches per GPU on the N-GPU run (at batch
256 on 4 GPUs, 16,384 prompts), so each rank's fixed costs (its first batch) weigh the same
whatever the batch size. Repeated runs go in one folder, e.g. --out
bench/results/generate-scaling-runs/bs256-4.json, and bench/generate_scaling_report.py tables
and charts them.

Usage (GPU machine):
    python bench/generate_scaling.py --gpus 4 [--arch llama-3-8b] [--prompts 16384]
CPU plumbing check (tiny model, 1 vs 2 processes):
    python bench/generate_scaling.py --tiny
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import GPU_SAFE_ENV, build_model, prompt_rows  # noqa: E402
from mgft.contract.generate import BATCH_SIZE  # noqa: E402

TARGET = 3.8
BATCHES_PER_GPU = 16


def run(world: int, model_dir: Path, prompts: Path, work: Path,
        args: argparse.Namespace) -> dict:
    out = work / "runs" / f"world-{world}"
    if out.exists():
        shutil.rmtree(out)  # the benchmark's own output: a leftover would be "resumed"
    # --gpu-ids, not --gpus: this process built the model on GPU 0 and still holds a CUDA
    # context there, which mgft's GPU choice (rightly) counts as busy.
    procs = ["--gpus", "0", "--nproc-per-node", str(world)] if args.tiny else [
        "--gpu-ids", ",".join(str(i) for i in range(world))]
    cmd = [sys.executable, "-m", "mgft.cli", "generate", "--backend", "local", *procs,
           "--model", str(model_dir), "--prompts", str(prompts), "--output", str(out),
           "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens),
           "--min-new-tokens", str(args.max_new_tokens)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=os.environ | GPU_SAFE_ENV, capture_output=True, text=True,
                          timeout=args.timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"world size {world} failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    metrics = json.loads((out / "generation_metrics.json").read_text())
    completions = [json.loads(line)["completion"]
                   for line in (out / "generations.jsonl").read_text().splitlines()]
    return {"world_size": metrics["world_size"], "device": metrics["device"],
            "prompts": metrics["prompts"], "tokens": metrics["completion_tokens"],
            "generate_s": metrics["generate_s"], "load_s": metrics["load_s"], "wall_s": wall,
            "tokens_per_s": metrics["tokens_per_s"],
            "peak_memory_bytes": metrics["peak_memory_bytes"],
            # Per rank, each batch's seconds: the first pays the warm-up, which a small prompt
            # set cannot amortize over 1/N of the batches.
            "batch_s": {r["rank"]: r.get("batch_s") for r in metrics.get("ranks", [])},
            "completions": completions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU plumbing check")
    parser.add_argument("--gpus", type=int, default=4, help="the N compared with 1")
    parser.add_argument("--arch", default="llama-3-8b", help="known architecture (GPU mode)")
    parser.add_argument("--prompts", type=int, default=None, help="size of the prompt set")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir(), "mgft-bench", "generate_scaling"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.batch_size = args.batch_size or (4 if args.tiny else BATCH_SIZE)
    args.prompts = args.prompts or (32 if args.tiny else BATCHES_PER_GPU * args.gpus
                                    * args.batch_size)
    args.max_new_tokens = args.max_new_tokens or (16 if args.tiny else 128)
    worlds = (1, 2) if args.tiny else (1, args.gpus)
    arch = "tiny" if args.tiny else args.arch
    args.out = args.out or Path(f"bench/results/generate_scaling{'-tiny' if args.tiny else ''}"
                                ".json")

    model_dir = build_model(arch, args.work / "models" / arch)
    prompts = prompt_rows(args.work / f"prompts-{args.prompts}.jsonl", args.prompts)
    runs = {w: run(w, model_dir, prompts, args.work, args) for w in worlds}
    one, many = runs[worlds[0]], runs[worlds[-1]]
    speedup = one["generate_s"] / many["generate_s"]
    wall_speedup = one["wall_s"] / many["wall_s"]
    same = sum(a == b for a, b in zip(one["completions"], many["completions"], strict=True))

    print(f"{'processes':>9} {'generate s':>10} {'tok/s':>9} {'load s':>7} {'wall s':>7} "
          f"{'peak GiB':>8}")
    for w, r in runs.items():
        print(f"{w:>9} {r['generate_s']:>10.2f} {r['tokens_per_s']:>9.0f} {r['load_s']:>7.1f} "
              f"{r['wall_s']:>7.1f} {r['peak_memory_bytes'] / 2**30:>8.2f}")
    caveat = "; not meaningful on CPU" if args.tiny else ""
    print(f"speedup {worlds[-1]} vs 1: generation {speedup:.2f}x, wall {wall_speedup:.2f}x "
          f"(target {TARGET}x on the generation phase{caveat})")
    print(f"identical completions (greedy) across world sizes: {same} of {len(one['completions'])}")
    result = {"mode": "tiny-cpu" if args.tiny else "gpu", "arch": arch, "target": TARGET,
              "settings": {k: getattr(args, k) for k in ("prompts", "batch_size",
                                                         "max_new_tokens")},
              "python": platform.python_version(),
              "runs": {str(w): {k: v for k, v in r.items() if k != "completions"}
                       for w, r in runs.items()},
              "speedup_generate": speedup, "speedup_wall": wall_speedup,
              "meets_target": None if args.tiny else speedup >= TARGET,
              "identical_completions": same}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
