"""How close `mgft plan`'s predicted peak is to the peak the trainer measures.

Each configuration runs through the trainer (`mgft submit --backend local`) for a few steps
with the trainer's defaults (kernels auto, packing on); metrics.json's peak_memory_bytes
(torch.cuda.max_memory_allocated over the whole run: loading, training and the evaluation
pass; the largest of any rank) is compared with the plan's predicted peak for the same job.
Every row records the prediction term by term and which moment (forward, step, eval) the
plan expects the peak at, so a miss points at its term. Target: within 15% on every
configuration (1B and 8B; lora, qlora, full; ddp, fsdp, zero2, zero3).

Usage (GPU machine, 4 GPUs; run subsets with --configs, results accumulate in the JSON):
    python bench/plan_accuracy.py --gpus 4 [--configs 1b-lora-ddp,8b-qlora-ddp] [--snapshot]
    --snapshot: also record, per run, the largest live allocations at rank 0's peak (torch's
    allocator history; bench/memory_snapshot.py), with the top frames that made them.
Runs measured by bench/perf.py (8B on 1/2/4 GPUs), predicted here without device time:
    python bench/plan_accuracy.py --from-perf bench/results/perf/perf.json
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import GPU_SAFE_ENV, build_model, training_rows  # noqa: E402
from plan_from_perf import perf_runs  # noqa: E402

TARGET = 0.15
ARCHS = {"1b": "llama-3.2-1b", "8b": "llama-3-8b", "tiny": "tiny"}
GIB = 2 ** 30
HOOK = Path(__file__).resolve().parent / "snapshot_hook"


@dataclass(frozen=True)
class Config:
    size: str  # a key of ARCHS
    tuning: str
    strategy: str
    micro_batch: int | None = None  # None: the run's --micro-batch
    kernels: str = "auto"
    packing: bool = True
    checkpointing: bool = False

    @property
    def name(self) -> str:
        extra = "" if self.micro_batch is None else f"-mb{self.micro_batch}"
        extra += "" if self.kernels == "auto" else f"-{self.kernels}"
        extra += "" if self.packing else "-padded"
        extra += "-ckpt" if self.checkpointing else ""
        return f"{self.size}-{self.tuning}-{self.strategy}{extra}"


# The bench's own runs: cheap (1B, and 8B only for QLoRA). With bench/perf.py's 8B LoRA
# (ddp, zero2, zero3, fsdp) and full (fsdp) runs through --from-perf, they cover 1B and 8B;
# lora, qlora and full; ddp, fsdp, zero2 and zero3. The 1B LoRA and QLoRA runs (and 8B
# QLoRA) peak in the evaluation pass (16 x seq-len logits); the larger micro-batches make the
# training step the peak of the other 1B runs, so both moments are measured.
GPU_CONFIGS = [
    Config("1b", "lora", "ddp"), Config("1b", "qlora", "ddp"),
    Config("1b", "full", "ddp", micro_batch=24), Config("1b", "full", "fsdp", micro_batch=24),
    Config("1b", "full", "zero2", micro_batch=24),
    Config("1b", "full", "zero3", micro_batch=12), Config("8b", "qlora", "ddp"),
]
OPTIONAL_CONFIGS = [  # by name with --configs: the old trainer path, checkpointing, ...
    Config("1b", "lora", "zero3", micro_batch=8),
    Config("1b", "lora", "ddp", kernels="none", packing=False),
    Config("1b", "full", "ddp", micro_batch=24, checkpointing=True),
    Config("8b", "lora", "ddp"), Config("8b", "lora", "zero3"), Config("8b", "full", "fsdp"),
]
TINY_CONFIGS = [Config("tiny", "lora", "ddp"), Config("tiny", "full", "ddp"),
                Config("tiny", "lora", "zero2")]


def environment() -> dict[str, Any]:
    """Facts of this machine the estimate depends on (Assumptions.varlen_gqa,
    .liger_installed), recorded with the results."""
    import importlib.util
    import inspect

    import torch

    facts: dict[str, Any] = {"torch": torch.__version__,
                             "cuda": torch.cuda.is_available(),
                             "liger_installed": importlib.util.find_spec("liger_kernel")
                             is not None}
    try:
        from torch.nn.attention.varlen import varlen_attn

        facts["varlen_gqa"] = "enable_gqa" in inspect.signature(varlen_attn).parameters
    except ImportError:
        facts["varlen_gqa"] = None
    return facts


def predict(job_fields: dict[str, Any], strategy: str, *, cpu: bool = False,
            env: dict[str, Any] | None = None, eval_len: int | None = None) -> dict[str, Any]:
    """The plan's estimate, term by term (bytes), its peak and the moment of the peak."""
    from mgft.plan.arch import resolve
    from mgft.plan.memory import Assumptions, Job, estimate
    from mgft.spec.job import Kernels, Strategy, Tuning

    env = env or {}
    job = Job(**job_fields | {"tuning": Tuning(job_fields["tuning"]),
                              "kernels": Kernels(job_fields["kernels"]),
                              "arch": resolve(job_fields["arch"])})
    # CPU dropout keeps its mask in the input dtype; CUDA keeps a bool. The evaluation pass
    # pads to the longest of its samples, at most --seq-len.
    a = Assumptions(dropout_mask_bytes=4 if cpu else 1,
                    liger_installed=env.get("liger_installed", not cpu),
                    varlen_gqa=env.get("varlen_gqa") is not False)
    if eval_len is not None:
        a = replace(a, eval_len=eval_len)
    b = estimate(job, Strategy(strategy), a)
    return {"peak": b.peak, "peak_at": b.peak_moment, "moments": b.moments, **b.terms(),
            "job": {k: (v.value if hasattr(v, "value") else v) for k, v in job_fields.items()}}


def job_fields(cfg: Config, model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {"arch": str(model_dir), "tuning": cfg.tuning, "dtype": "fp32" if args.tiny else "bf16",
            "micro_batch": cfg.micro_batch or args.micro_batch, "seq_len": args.seq_len,
            "gpus_per_node": 2 if args.tiny else max(args.gpus, 1), "kernels": cfg.kernels,
            "packing": cfg.packing, "checkpointing": cfg.checkpointing}


def run_one(cfg: Config, model_dir: Path, data: Path, work: Path, args: argparse.Namespace,
            env: dict[str, Any]) -> dict:
    out = work / "runs" / cfg.name
    if out.exists():
        shutil.rmtree(out)  # the benchmark's own output from an earlier invocation
    # --gpu-ids, not --gpus: this process built the model on GPU 0 and still holds a CUDA
    # context there, which mgft's GPU choice (rightly) counts as busy.
    procs = ["--gpus", "0", "--nproc-per-node", "2"] if args.tiny else [
        "--gpu-ids", ",".join(str(i) for i in range(args.gpus))]
    fields = job_fields(cfg, model_dir, args)
    cmd = [sys.executable, "-m", "mgft.cli", "submit", "--backend", "local", *procs,
           "--strategy", cfg.strategy, "--tuning", cfg.tuning, "--model", str(model_dir),
           "--dataset", str(data), "--output", str(out), "--max-steps", str(args.steps),
           "--micro-batch", str(fields["micro_batch"]), "--seq-len", str(args.seq_len),
           # No checkpoints or final save: the plan predicts the training step, and writing
           # a full fine-tune's optimizer state would cost device time, not information.
           "--lr", "1e-4", "--kernels", cfg.kernels, "--save", "none",
           "--packing" if cfg.packing else "--no-packing",
           *(["--activation-checkpointing"] if cfg.checkpointing else [])]
    run_env = os.environ | GPU_SAFE_ENV
    snapshots = work / "snapshots" / cfg.name
    if args.snapshot == "all" or cfg.name in (args.snapshot or "").split(","):
        shutil.rmtree(snapshots, ignore_errors=True)
        snapshots.mkdir(parents=True)
        run_env |= {"MGFT_BENCH_SNAPSHOT_DIR": str(snapshots), "PYTHONPATH": os.pathsep.join(
            p for p in (str(HOOK), os.environ.get("PYTHONPATH")) if p)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=args.timeout)
    row = {"config": cfg.name, "source": "bench", "strategy": cfg.strategy,
           "tuning": cfg.tuning, "settings": asdict(cfg), "wall_s":
           round(time.perf_counter() - start, 1),
           "predicted": predict(fields, cfg.strategy, cpu=args.tiny, env=env)}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        last = next((x for x in lines if "mgft-train: " in x), lines[-1])
        verdict = "refused" if proc.returncode == 2 else "failed"
        return row | {"status": f"{verdict} (exit {proc.returncode}): {last[:160]}"}
    metrics = json.loads((out / "metrics.json").read_text())
    if (snapshots / "rank0.json").is_file():
        row["snapshot"] = json.loads((snapshots / "rank0.json").read_text())
    ran = {k: metrics.get(k) for k in ("strategy", "world_size", "device", "kernels",
                                       "attention", "activation_checkpointing")}
    return row | measured(row["predicted"]["peak"], metrics["peak_memory_bytes"], args.tiny,
                          ran=ran)


def measured(predicted: float, peak: float, tiny: bool, **extra: Any) -> dict[str, Any]:
    error = (predicted - peak) / peak
    return {"status": "ok", "measured_peak": peak, "error": error,
            "within_target": None if tiny else abs(error) <= TARGET, **extra}


def from_perf(path: Path, env: dict[str, Any]) -> list[dict]:
    """Rows for bench/perf.py's mgft runs: their configuration re-predicted, their measured
    peak compared."""
    from mgft.spec.errors import SpecError

    rows = []
    for name, config in perf_runs(path):
        row: dict[str, Any] = {"config": f"perf:{name}", "source": str(path)}
        if isinstance(config, str):
            rows.append(row | {"status": f"skipped: {config}"})
            continue
        fields = {"arch": config["arch"], "tuning": config["tuning"], "dtype": "bf16",
                  "micro_batch": config["micro_batch"], "seq_len": config["seq_len"],
                  "grad_accum": config["grad_accum"], "gpus_per_node": config["gpus"],
                  "nodes": config["nodes"], "kernels": config["kernels"],
                  "packing": config["packing"], "lora_r": config["lora_r"],
                  "checkpointing": config["activation_checkpointing"]}
        facts = env | ({} if config["liger_applied"] is None else
                       {"liger_installed": config["liger_applied"]})
        try:
            predicted = predict(fields, config["strategy"], env=facts,
                                eval_len=config["eval_len"])
        except (SpecError, ValueError) as err:
            rows.append(row | {"status": f"skipped: {err}"})
            continue
        rows.append(row | {"strategy": config["strategy"], "tuning": config["tuning"],
                           "predicted": predicted}
                    | measured(predicted["peak"], config["peak_bytes"], False))
    return rows


def print_table(rows: list[dict], tiny: bool) -> None:
    print(f"{'config':<34} {'predicted GiB':>13} {'at':<7} {'measured GiB':>12} {'error':>8}"
          "  within 15%")
    for r in rows:
        pred = r.get("predicted") or {}
        p = (f"{pred['peak'] / GIB:>13.2f} {pred.get('peak_at', '?'):<7}" if pred
             else f"{'-':>13} {'':<7}")
        if r["status"] != "ok":
            print(f"{r['config']:<34} {p} {'-':>12} {'-':>8}  {r['status']}")
            continue
        verdict = "n/a (CPU RSS)" if tiny else ("yes" if r["within_target"] else "NO")
        print(f"{r['config']:<34} {p} {r['measured_peak'] / GIB:>12.2f} {r['error']:>+8.1%}"
              f"  {verdict}")


def print_sites(rows: list[dict], n: int = 12) -> None:
    """For each run with a snapshot: where rank 0's memory was at its peak, largest first."""
    for r in rows:
        sites = (r.get("snapshot") or {}).get("by_site")
        if not sites:
            continue
        print(f"\n{r['config']}: rank 0 at its peak "
              f"({r['snapshot']['peak_bytes'] / GIB:.2f} GiB), by the code that allocated it")
        for site in sites[:n]:
            print(f"{site['bytes'] / GIB:>8.2f} GiB {site['count']:>6}  {site['site'][:110]}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU plumbing check")
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--configs", help="comma-separated config names (default: the "
                        "default set; 'none' runs nothing, e.g. with --from-perf)")
    parser.add_argument("--from-perf", type=Path, action="append", default=[],
                        help="a bench/perf.py perf.json whose mgft runs to predict (repeatable)")
    parser.add_argument("--snapshot", nargs="?", const="all", default=None, metavar="CONFIGS",
                        help="record the largest live allocations at rank 0's peak (GPU), in "
                        "every run or in the comma-separated configs named (recording slows "
                        "a run)")
    parser.add_argument("--micro-batch", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per config")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir(), "mgft-bench", "plan_accuracy"),
                        help="models, data and runs (models are reused between invocations)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true", help="drop earlier rows from --out")
    args = parser.parse_args(argv)
    args.micro_batch = args.micro_batch or (4 if args.tiny else 2)
    args.seq_len = args.seq_len or (64 if args.tiny else 1024)
    args.steps = args.steps or (3 if args.tiny else 6)
    suffix = "-tiny" if args.tiny else ""
    args.out = args.out or Path(f"bench/results/plan_accuracy{suffix}.json")
    known = TINY_CONFIGS if args.tiny else GPU_CONFIGS + OPTIONAL_CONFIGS
    if args.tiny and args.snapshot:
        parser.error("--snapshot records CUDA allocations: not with --tiny")
    # --from-perf alone re-predicts measured runs (no device time); it runs nothing here
    args.selected = [] if args.from_perf and not args.configs else (
        TINY_CONFIGS if args.tiny else GPU_CONFIGS)
    if args.configs:
        wanted = set(args.configs.split(",")) - {"none"}
        unknown = wanted - {c.name for c in known}
        if unknown:
            parser.error(f"--configs: unknown {sorted(unknown)}; known: "
                         f"{', '.join(c.name for c in known)}")
        args.selected = [c for c in known if c.name in wanted]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    previous_file = {} if args.fresh or not args.out.is_file() else json.loads(
        args.out.read_text())
    # This machine's facts when it runs the configurations; else those the GPU run recorded
    # (--from-perf on a laptop predicts for the GPUs that measured), else the defaults.
    env = environment() if args.selected else previous_file.get("environment") or {}
    if not env.get("cuda") and not args.tiny:
        env = {}
    rows = []
    for cfg in args.selected:
        model_dir = build_model(ARCHS[cfg.size], args.work / "models" / cfg.size)
        batch = cfg.micro_batch or args.micro_batch
        # Packed runs: short rows, so packs are full (as the plan assumes); padded runs: rows
        # around seq_len, so padded batches are seq_len wide. The first row is longer than
        # seq_len either way: the evaluation pass is seq_len wide.
        spread = (0.05, 0.5) if cfg.packing else (0.75, 1.25)
        rows_per_step = batch * max(args.gpus, 2) * (8 if cfg.packing else 1)
        data = training_rows(model_dir, args.work / (
            f"data-{cfg.size}-{args.seq_len}-{'packed' if cfg.packing else 'padded'}.jsonl"),
            n=max(256, 2 * args.steps * rows_per_step), seq_len=args.seq_len, spread=spread,
            first_full=True)
        rows.append(run_one(cfg, model_dir, data, args.work, args, env))
        print(f"{cfg.name}: {rows[-1]['status']} ({rows[-1]['wall_s']} s)", flush=True)
    for path in args.from_perf:
        rows += from_perf(path, env)

    previous = {r["config"]: r for r in previous_file.get("rows", [])}
    merged = previous | {r["config"]: r for r in rows}
    print_table(list(merged.values()), args.tiny)
    print_sites(rows)
    ok = [r for r in merged.values() if r["status"] == "ok"]
    result = {"mode": "tiny-cpu" if args.tiny else "gpu", "target": TARGET,
              "settings": {k: v for k, v in vars(args).items() if k in (
                  "gpus", "micro_batch", "seq_len", "steps")},
              "environment": env or previous_file.get("environment") or {},
              "python": platform.python_version(),
              "rows": list(merged.values()), "measured": len(ok),
              "within_target": sum(1 for r in ok if r.get("within_target"))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    if not args.tiny:
        print(f"{result['within_target']} of {len(ok)} measured configurations within "
              f"{TARGET:.0%}")


if __name__ == "__main__":
    main()
