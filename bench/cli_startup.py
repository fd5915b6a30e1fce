"""How long `mgft render` takes per backend, next to a bare `python -c pass` in the same run.

Usage: python bench/cli_startup.py [--repeats N] [--out bench/results/cli_startup.json]
Target: every render under 0.5 s wall on a laptop-class core; CPU (user + system, which load
from other processes does not inflate the way it does wall time) is reported beside it.
Bytecode is cached for the runs, as an installed mgft has it, in a directory of the bench's own
(PYTHONPYCACHEPREFIX): with PYTHONDONTWRITEBYTECODE set, every run would otherwise recompile
each module whose __pycache__ entry is missing or older than its source, and time that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Local renders check that the model and data exist, so point at small real files.
_TMP = Path(tempfile.mkdtemp(prefix="mgft-bench-"))
(_TMP / "model").mkdir()
(_TMP / "model" / "config.json").write_text("{}")
(_TMP / "train.jsonl").write_text("{}\n")
JOB = ["--model", str(_TMP / "model"), "--dataset", str(_TMP / "train.jsonl")]
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {
    "PYTHONPYCACHEPREFIX": str(_TMP / "pycache")}
CASES = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "render local": [sys.executable, "-m", "mgft.cli", "render", "--backend", "local",
                     "--gpus", "0", "--nproc-per-node", "2", *JOB],
    "render slurm": [sys.executable, "-m", "mgft.cli", "render", "--backend", "slurm",
                     "--gpus", "8", "--nodes", "4", *JOB],
    "render k8s pytorchjob": [sys.executable, "-m", "mgft.cli", "render", "--backend", "k8s",
                              "--gpus", "4", "--nodes", "2", "--image", "r/i:t", *JOB],
    "render k8s trainjob": [sys.executable, "-m", "mgft.cli", "render", "--backend", "k8s",
                            "--k8s-api", "trainjob", "--image", "r/i:t", *JOB],
    "mgft --help": [sys.executable, "-m", "mgft.cli", "--help"],
}


def wall(cmd: list[str]) -> float:
    return timed(cmd)[0]


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=ENV)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/results/cli_startup.json"))
    args = parser.parse_args()
    rows = {}
    for name, cmd in CASES.items():
        wall(cmd)  # warm the page cache, and write the bytecode
        runs = [timed(cmd) for _ in range(args.repeats)]
        times, cpu = [w for w, _ in runs], [c for _, c in runs]
        rows[name] = {"median_s": statistics.median(times), "max_s": max(times),
                      "cpu_median_s": statistics.median(cpu), "cpu_min_s": min(cpu)}
    print(f"{'command':<28} {'median s':>9} {'max s':>7} {'CPU median s':>13}")
    for name, row in rows.items():
        print(f"{name:<28} {row['median_s']:>9.3f} {row['max_s']:>7.3f} "
              f"{row['cpu_median_s']:>13.3f}")
    result = {"python": platform.python_version(), "machine": platform.machine(),
              "processor": platform.processor(), "repeats": args.repeats, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
