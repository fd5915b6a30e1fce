"""Time to the first training step on a large dataset: without the data cache, with a cold one
(built in this run) and with a warm one (built by an earlier run).

Usage: python bench/startup.py [--rows 1000000] [--work DIR] [--out bench/results/startup.json]

The tiny Llama and its tokenizer (mgft_train.demo_assets) train one step on --rows alpaca rows
of the demo task, one CPU process each run (`python -m mgft_train`, --save none). Each run is
timed from its launch to the end of its first step (metrics.json's first_step_at), so the
figure holds interpreter start, imports, reading the data and loading the model as a user
waits for them; the data part is metrics.json's data_cache.seconds.
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

from mgft_train import demo_assets as demo

FLAGS = ["--max-steps=1", "--micro-batch=4", "--seq-len=256", "--save=none"]


def assets(work: Path, rows: int) -> tuple[Path, Path]:
    """The model dir and a jsonl of `rows` demo rows; reused when already there."""
    data = work / f"rows-{rows}.jsonl"
    if not (work / "model").is_dir():
        demo.build(work / "assets", rows=256)
        shutil.move(work / "assets" / "model", work / "model")
    if not data.is_file():
        partial = data.with_suffix(".partial")
        with open(partial, "w", encoding="utf-8") as f:
            for row in demo.make_rows(rows, seed=0):
                f.write(json.dumps(demo.as_format(row, "alpaca")) + "\n")
        partial.rename(data)
    return work / "model", data


def run(model: Path, data: Path, out: Path, cache: str) -> dict:
    env = {**os.environ, "MGFT_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mgft_train", f"--model={model}", f"--dataset={data}",
           f"--output={out}", f"--data-cache={cache}", *FLAGS]
    launched = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    report = json.loads((out / "metrics.json").read_text())
    return {"first_step_s": round(report["first_step_at"] - launched, 2),
            "process_s": round(time.time() - launched, 2),
            "data_s": report["data_cache"]["seconds"],
            "data_cache": report["data_cache"]["result"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the model and data here (default: a temporary dir)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/startup.json"))
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="mgft-startup-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, data = assets(work, args.rows)
    print(f"{args.rows} rows ({data.stat().st_size / 2**20:.0f} MiB) ready in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    cache = work / "data-cache"
    shutil.rmtree(cache, ignore_errors=True)
    runs = {}
    for name, where in (("no cache (before)", "none"), ("cold cache (first run)", str(cache)),
                        ("warm cache (later runs, resume)", str(cache))):
        out = work / f"out-{len(runs)}"
        shutil.rmtree(out, ignore_errors=True)
        runs[name] = run(model, data, out, where)
        print(f"{name}: {runs[name]}", flush=True)
    print(f"\n{'run':34} {'to first step':>14} {'data ready':>11}  cache")
    for name, r in runs.items():
        print(f"{name:34} {r['first_step_s']:>12.1f} s {r['data_s']:>9.1f} s  {r['data_cache']}")
    record = {"rows": args.rows, "data_mib": round(data.stat().st_size / 2**20, 1),
              "flags": FLAGS, "runs": runs, "cpus": os.cpu_count(),
              "machine": platform.machine(), "python": platform.python_version()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
