"""How close `mgft plan`'s predicted peak is to the peak the trainer measures.

Each configuration runs through the trainer (`mgft submit --backend local`) for a few steps;
metrics.json's peak_memory_bytes (torch.cuda.max_memory_allocated, the largest of any rank)
is compared with the plan's predicted peak for the same job. Target: within 15% on every
configuration (1B and 8B; lora, qlora, full; ddp, fsdp, zero2, zero3).

Usage (GPU machine, 4 GPUs; run subsets with --configs, results accumulate in the JSON):
    python bench/plan_accuracy.py --gpus 4 [--configs 1b-lora-ddp,8b-full-zero3]
CPU plumbing check (tiny model, 2 processes; CPU peaks are process RSS, not comparable):
    python bench/plan_accuracy.py --tiny
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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import GPU_SAFE_ENV, build_model, training_rows  # noqa: E402

TARGET = 0.15
ARCHS = {"1b": "llama-3.2-1b", "8b": "llama-3-8b", "tiny": "tiny"}


@dataclass(frozen=True)
class Config:
    size: str  # a key of ARCHS
    tuning: str
    strategy: str

    @property
    def name(self) -> str:
        return f"{self.size}-{self.tuning}-{self.strategy}"


GPU_CONFIGS = [Config(s, t, st) for s, t, st in [
    ("1b", "lora", "ddp"), ("1b", "full", "ddp"), ("1b", "qlora", "ddp"), ("1b", "full", "fsdp"),
    ("1b", "full", "zero2"), ("1b", "full", "zero3"), ("8b", "lora", "ddp"),
    ("8b", "lora", "fsdp"), ("8b", "lora", "zero2"), ("8b", "lora", "zero3"),
    ("8b", "qlora", "ddp"), ("8b", "full", "fsdp"), ("8b", "full", "zero2"),
    ("8b", "full", "zero3")]]
TINY_CONFIGS = [Config("tiny", "lora", "ddp"), Config("tiny", "full", "ddp"),
                Config("tiny", "lora", "zero2")]


def predict(cfg: Config, model_dir: Path, args: argparse.Namespace) -> dict:
    from mgft.plan.arch import resolve
    from mgft.plan.memory import Assumptions, Job, estimate
    from mgft.spec import Strategy, Tuning

    job = Job(arch=resolve(str(model_dir)), tuning=Tuning(cfg.tuning),
              dtype="fp32" if args.tiny else "bf16", micro_batch=args.micro_batch,
              seq_len=args.seq_len, gpus_per_node=max(args.gpus, 1) if not args.tiny else 2)
    # CPU dropout keeps its mask in the input dtype; CUDA keeps a bool.
    assumptions = Assumptions(dropout_mask_bytes=4 if args.tiny else 1)
    b = estimate(job, Strategy(cfg.strategy), assumptions)
    return {"peak": b.peak, **{k: getattr(b, k) for k in (
        "params", "grads", "optimizer", "activations", "buffers", "step_extra")}}


def run_one(cfg: Config, model_dir: Path, data: Path, work: Path,
            args: argparse.Namespace) -> dict:
    out = work / "runs" / cfg.name
    if out.exists():
        shutil.rmtree(out)  # the benchmark's own output from an earlier invocation
    # --gpu-ids, not --gpus: this process built the model on GPU 0 and still holds a CUDA
    # context there, which mgft's GPU choice (rightly) counts as busy.
    procs = ["--gpus", "0", "--nproc-per-node", "2"] if args.tiny else [
        "--gpu-ids", ",".join(str(i) for i in range(args.gpus))]
    cmd = [sys.executable, "-m", "mgft.cli", "submit", "--backend", "local", *procs,
           "--strategy", cfg.strategy, "--tuning", cfg.tuning, "--model", str(model_dir),
           "--dataset", str(data), "--output", str(out), "--max-steps", str(args.steps),
           "--micro-batch", str(args.micro_batch), "--seq-len", str(args.seq_len),
           # Padded batches: the plan sizes padded micro-batches (Assumptions.padded).
           "--lr", "1e-4", "--no-packing"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=os.environ | GPU_SAFE_ENV, capture_output=True, text=True,
                          timeout=args.timeout)
    row = {"config": cfg.name, "strategy": cfg.strategy, "tuning": cfg.tuning,
           "wall_s": round(time.perf_counter() - start, 1),
           "predicted": predict(cfg, model_dir, args)}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        last = next((x for x in lines if "mgft-train: " in x), lines[-1])
        verdict = "refused" if proc.returncode == 2 else "failed"
        return row | {"status": f"{verdict} (exit {proc.returncode}): {last[:160]}"}
    metrics = json.loads((out / "metrics.json").read_text())
    measured = metrics["peak_memory_bytes"]
    error = (row["predicted"]["peak"] - measured) / measured
    return row | {"status": "ok", "ran": metrics["strategy"], "world_size": metrics["world_size"],
                  "device": metrics["device"], "measured_peak": measured, "error": error,
                  "within_target": None if args.tiny else abs(error) <= TARGET}


def print_table(rows: list[dict], tiny: bool) -> None:
    gib = 2 ** 30
    print(f"{'config':<18} {'ran':<6} {'predicted GiB':>13} {'measured GiB':>12} "
          f"{'error':>8}  within 15%")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['config']:<18} {'-':<6} {r['predicted']['peak'] / gib:>13.2f} "
                  f"{'-':>12} {'-':>8}  {r['status']}")
            continue
        verdict = "n/a (CPU RSS)" if tiny else ("yes" if r["within_target"] else "NO")
        print(f"{r['config']:<18} {r['ran']:<6} {r['predicted']['peak'] / gib:>13.2f} "
              f"{r['measured_peak'] / gib:>12.2f} {r['error']:>+8.1%}  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU plumbing check")
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--configs", help="comma-separated config names (default: all)")
    parser.add_argument("--micro-batch", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per config")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir(), "mgft-bench", "plan_accuracy"),
                        help="models, data and runs (models are reused between invocations)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true", help="drop earlier rows from --out")
    args = parser.parse_args()
    args.micro_batch = args.micro_batch or (4 if args.tiny else 2)
    args.seq_len = args.seq_len or (64 if args.tiny else 1024)
    args.steps = args.steps or (3 if args.tiny else 6)
    suffix = "-tiny" if args.tiny else ""
    args.out = args.out or Path(f"bench/results/plan_accuracy{suffix}.json")
    configs = TINY_CONFIGS if args.tiny else GPU_CONFIGS
    if args.configs:
        wanted = set(args.configs.split(","))
        unknown = wanted - {c.name for c in configs}
        if unknown:
            parser.error(f"--configs: unknown {sorted(unknown)}; known: "
                         f"{', '.join(c.name for c in configs)}")
        configs = [c for c in configs if c.name in wanted]

    rows = []
    for cfg in configs:
        model_dir = build_model(ARCHS[cfg.size], args.work / "models" / cfg.size)
        data = training_rows(model_dir, args.work / f"data-{cfg.size}-{args.seq_len}.jsonl",
                             n=max(64, 4 * args.steps * args.micro_batch * max(args.gpus, 2)),
                             seq_len=args.seq_len)
        rows.append(run_one(cfg, model_dir, data, args.work, args))
        print(f"{cfg.name}: {rows[-1]['status']} ({rows[-1]['wall_s']} s)", flush=True)

    previous = {} if args.fresh or not args.out.is_file() else {
        r["config"]: r for r in json.loads(args.out.read_text())["rows"]}
    merged = previous | {r["config"]: r for r in rows}
    print_table(list(merged.values()), args.tiny)
    ok = [r for r in merged.values() if r["status"] == "ok"]
    result = {"mode": "tiny-cpu" if args.tiny else "gpu", "target": TARGET,
              "settings": {k: v for k, v in vars(args).items() if k in (
                  "gpus", "micro_batch", "seq_len", "steps")},
              "python": platform.python_version(), "rows": list(merged.values()),
              "measured": len(ok),
              "within_target": sum(1 for r in ok if r.get("within_target"))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    if not args.tiny:
        print(f"{result['within_target']} of {len(ok)} measured configurations within "
              f"{TARGET:.0%}")


if __name__ == "__main__":
    main()
