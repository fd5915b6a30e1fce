"""What each --precision costs on a full fine-tune (issue 16): `mgft plan`'s bytes per
parameter and peak next to the measured peak, tokens/s and loss, one `mgft submit --backend
local` run per choice, same model (random init), data, batch and steps.

    python bench/precision.py --out DIR            (1 GPU, llama-3-8b, ddp, 141 GiB)
    python bench/precision.py --tiny --out DIR     (CPU plumbing: tiny Llama, 2 gloo processes)

A choice the plan says does not fit is recorded with the plan's numbers and not run
(--run-all runs it anyway, to see the out-of-memory). A failed run is recorded with its exit
code and log tail. Writes DIR/precision-<arch>-<gpus>g.json and .md, and each run's log
under DIR/runs/; models, data and run outputs go under --work. An earlier result in DIR with
the same settings keeps the choices not run again, so --precisions can split the runs over
several invocations (an 8B run takes a few minutes).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_assets import model_config, sft_rows  # noqa: E402
from perf import base_env, launch  # noqa: E402

GiB = 1024**3
PRECISIONS = ("mixed", "bf16-kahan", "bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU plumbing check (tiny model, gloo)")
    p.add_argument("--arch", default=None, help="llama-3-8b (tiny with --tiny)")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--gpu-memory", type=float, default=141.0, help="GiB per GPU, for the plan")
    p.add_argument("--strategy", default="ddp", choices=("ddp", "fsdp", "mp"))
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (20; 4 tiny)")
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=None, help="1024 (128 with --tiny)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-all", action="store_true", help="also run what the plan says won't fit")
    p.add_argument("--timeout", type=int, default=None, help="seconds per run (540; 240 tiny)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/mgft-bench/precision"))
    args = p.parse_args(argv)
    args.arch = args.arch or ("tiny" if args.tiny else "llama-3-8b")
    args.steps = args.steps or (4 if args.tiny else 20)
    args.seq_len = args.seq_len or (128 if args.tiny else 1024)
    args.timeout = args.timeout or (240 if args.tiny else 540)
    args.precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    bad = [x for x in args.precisions if x not in PRECISIONS]
    if bad:
        p.error(f"--precisions {','.join(bad)}: use some of {','.join(PRECISIONS)}")
    return args


def planned(args: argparse.Namespace, model_dir: Path, precision: str) -> dict[str, Any]:
    """`mgft plan`'s view of this run: bytes per parameter, the peak, whether it fits."""
    from mgft.plan.arch import resolve
    from mgft.plan.memory import Job, estimate, param_bytes
    from mgft.plan.pick import Budget
    from mgft.spec.job import Precision, Strategy, Tuning

    strategy = Strategy(args.strategy)
    job = Job(arch=resolve(str(model_dir)), tuning=Tuning.FULL, precision=Precision(precision),
              dtype="fp32" if args.tiny else "bf16", micro_batch=args.micro_batch,
              seq_len=args.seq_len, gpus_per_node=2 if args.tiny else args.gpus)
    b, budget = estimate(job, strategy), Budget(gpu_memory_gib=args.gpu_memory)
    pb = param_bytes(job, strategy)
    return {"bytes_per_param": {"weights": pb.weights, "grads": pb.grads,
                                "optimizer": pb.optimizer, "master": pb.master,
                                "total": pb.total},
            "peak_gib": round(b.peak / GiB, 2), "usable_gib": round(budget.usable / GiB, 2),
            "fits": b.peak <= budget.usable}


def command(args: argparse.Namespace, model_dir: Path, data: Path, output: Path,
            precision: str) -> list[str]:
    procs = ["--gpus", "0", "--nproc-per-node", "2"] if args.tiny else [
        "--gpus", str(args.gpus), "--gpu-ids", ",".join(str(i) for i in range(args.gpus))]
    return [sys.executable, "-m", "mgft.cli", "submit", "--backend", "local", *procs,
            "--strategy", args.strategy, "--tuning", "full", "--precision", precision,
            "--model", str(model_dir), "--random-init", "--dataset", str(data),
            "--output", str(output), "--max-steps", str(args.steps), "--lr", str(args.lr),
            "--micro-batch", str(args.micro_batch), "--seq-len", str(args.seq_len),
            "--seed", str(args.seed), "--save", "none"]


def run_one(args: argparse.Namespace, model_dir: Path, data: Path, precision: str) -> dict:
    row: dict[str, Any] = {"precision": precision,
                           "plan": planned(args, model_dir, precision)}
    if not row["plan"]["fits"] and not args.run_all:
        return row | {"status": f"skipped: the plan's peak, {row['plan']['peak_gib']} GiB, is "
                                f"over the {row['plan']['usable_gib']} GiB usable per GPU"}
    output = args.work / "runs" / precision
    if (output / "metrics.json").exists():
        (output / "metrics.json").unlink()  # an earlier invocation's: mgft refuses to overwrite
    log = args.out / "runs" / f"{precision}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    code, wall = launch(command(args, model_dir, data, output, precision),
                        base_env(args, args.gpus), log, args.timeout)
    row |= {"exit": code, "wall_s": round(wall, 1)}
    if code != 0 or not (output / "metrics.json").exists():
        return row | {"status": "failed", "error": log.read_text()[-2000:]}
    m = json.loads((output / "metrics.json").read_text())
    world = m["world_size"]
    steady = m["tokens_per_s_after_warmup"] or m["tokens_per_s"]
    return row | {
        "status": "ok", "ran": m["precision"], "strategy": m["strategy"], "world_size": world,
        "peak_gib": round(m["peak_memory_bytes"] / GiB, 2),
        "tokens_per_s_per_gpu": round(steady / world, 1),
        "median_step_s": sorted(m["step_s"])[len(m["step_s"]) // 2],
        "first_loss": m["first_loss"], "last_loss": m["last_loss"], "losses": m["losses"],
        "versions": m["versions"]}


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    versions = next((r["versions"] for r in result["runs"] if r["status"] == "ok"), {})
    stack = ", ".join(f"{k} {v}" for k, v in versions.items())
    where = "2 CPU processes (gloo)" if s["tiny"] else \
        f"{s['gpus']} GPU(s) of {s['gpu_memory']:g} GiB"
    lines = [f"# --precision: {s['arch']} full fine-tune, {s['strategy']}, {where}",
             "",
             f"micro-batch {s['micro_batch']} x seq-len {s['seq_len']} (packed), {s['steps']} "
             f"steps, lr {s['lr']}, random init; host {result['host']}; {stack}",
             "",
             "| precision | bytes/param (w+g+opt+master) | plan peak GiB | measured peak GiB | "
             "tokens/s/GPU | median step s | loss first -> last | status |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        b, plan, ok = r["plan"]["bytes_per_param"], r["plan"], r["status"] == "ok"
        cells = [r["precision"],
                 f"{b['weights']}+{b['grads']}+{b['optimizer']}+{b['master']} = {b['total']}",
                 f"{plan['peak_gib']:.1f}"]
        cells += [f"{r['peak_gib']:.1f}", f"{r['tokens_per_s_per_gpu']:.0f}",
                  f"{r['median_step_s']:.3f}",
                  f"{r['first_loss']:.3f} -> {r['last_loss']:.3f}",
                  f"ok ({r['ran']['optimizer']})"] if ok else ["-"] * 4 + [r["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = model_config(args.arch, args.work / "models" / args.arch, seed=args.seed)
    rows = max(64, 2 * args.steps * args.micro_batch * (2 if args.tiny else args.gpus) * 4)
    data = args.work / f"sft-{args.arch}-{args.seq_len}-{rows}.jsonl"
    sft_rows(model_dir, data, rows, (args.seq_len // 8, args.seq_len // 2), seed=args.seed)
    settings = {k: getattr(args, k) for k in ("tiny", "arch", "gpus", "gpu_memory", "strategy",
                                              "steps", "micro_batch", "seq_len", "lr", "seed")}
    name = f"precision-{args.arch}-{args.gpus}g"
    path = args.out / f"{name}.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    kept = [r for r in earlier.get("runs", []) if r["precision"] not in args.precisions] \
        if earlier.get("settings") == settings else []
    result: dict[str, Any] = {"settings": settings, "host": platform.node(),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": kept}
    for i, precision in enumerate(args.precisions, 1):
        print(f"[{i}/{len(args.precisions)}] {precision}", flush=True)
        result["runs"].append(run_one(args, model_dir, data, precision))
        result["runs"].sort(key=lambda r: PRECISIONS.index(r["precision"]))
        print(f"    {next(r for r in result['runs'] if r['precision'] == precision)['status']}",
              flush=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        (args.out / f"{name}.md").write_text(markdown(result))
    return 0 if all(r["status"] != "failed" for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
