"""How close `mgft plan`'s host-memory figure is to the host memory a training job really uses.

Each configuration runs through the trainer (`mgft submit --backend local`) for a few steps
and a final save, while this script samples the job's process tree every 0.2 s from /proc:
the node figure is the largest sum of the tree's resident memory (VmRSS) over the samples,
the plan's equivalent is its host figure for the busiest node (`mgft plan --json`:
strategies[].host_gib, the largest of its load, train and save moments). Each process's own
peak (VmHWM) is recorded too. Target: within 15% for zero3-offload (issue 18), the strategy
whose host memory decides whether a job can run at all. The other strategies' rows show the
per-process runtime term (torch, CUDA, the trainer's libraries).

Usage (GPU machine; models are built once under --work and reused):
    python bench/host_memory.py --configs 1b-full-zero3-offload,3b-full-zero3-offload
CPU plumbing check (tiny model, ddp, 2 processes; a CPU job's weights and optimizer live in
its RSS, which the plan's host figure does not count, so the error means nothing there):
    python bench/host_memory.py --tiny
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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import GPU_SAFE_ENV, build_model, training_rows  # noqa: E402

TARGET = 0.15
GIB = 2 ** 30
ARCHS = {"tiny": "tiny", "1b": "llama-3.2-1b", "3b": "llama-3.2-3b", "8b": "llama-3-8b",
         "qwen3-1.7b": "qwen3-1.7b"}


@dataclass(frozen=True)
class Config:
    size: str
    tuning: str
    strategy: str
    micro_batch: int = 2

    @property
    def name(self) -> str:
        return f"{self.size}-{self.tuning}-{self.strategy}"


CONFIGS = [Config("1b", "full", "zero3-offload"), Config("3b", "full", "zero3-offload"),
           Config("qwen3-1.7b", "full", "zero3-offload"),
           Config("1b", "full", "ddp"), Config("8b", "lora", "zero3-offload")]
TINY = [Config("tiny", "full", "ddp")]


def _kib(status: str, key: str) -> int:
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def tree(root: int) -> list[int]:
    """root and every process below it (from /proc/*/stat's parent field)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


class Sampler(threading.Thread):
    """Largest sum of VmRSS over the tree, and each process's VmHWM, until stopped."""

    def __init__(self, root: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.node_peak, self.node_peak_at = 0, 0.0
        self.hwm: dict[int, tuple[str, int]] = {}
        self.samples = 0
        self.series: list[tuple[float, int]] = []  # (seconds, bytes), every sample
        self._halt = threading.Event()
        self._start = time.perf_counter()

    def run(self) -> None:
        while not self._halt.is_set():
            total = 0
            for pid in tree(self.root):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                total += _kib(status, "VmRSS")
                # A process that has exited but is not yet reaped shows no Vm* lines: keep
                # the peak read while it ran.
                peak = max(_kib(status, "VmHWM"), self.hwm.get(pid, ("", 0))[1])
                self.hwm[pid] = (cmd.decode(errors="replace")[:120], peak)
            self.samples += 1
            now = time.perf_counter() - self._start
            self.series.append((round(now, 2), total))
            if total > self.node_peak:
                self.node_peak, self.node_peak_at = total, now
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def plan_host(cfg: Config, model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "mgft.cli", "plan", "--model", str(model_dir),
           "--tuning", cfg.tuning, "--gpus", str(args.procs), "--micro-batch",
           str(cfg.micro_batch), "--seq-len", str(args.seq_len), "--json",
           "--dtype", "fp32" if args.tiny else "bf16"]
    plan = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    row = next(s for s in plan["strategies"] if s["strategy"] == cfg.strategy)
    return {k: row[k] for k in ("host_gib", "host_peak_at", "host_terms_gib",
                                "processes_per_node", "peak_gib")}


def run_one(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    model_dir = build_model(ARCHS[cfg.size], args.work / "models" / cfg.size)
    data = training_rows(model_dir, args.work / f"data-{args.seq_len}.jsonl",
                         n=max(256, 16 * args.steps * cfg.micro_batch * args.procs),
                         seq_len=args.seq_len, spread=(0.05, 0.5))
    out = args.work / "runs" / cfg.name
    shutil.rmtree(out, ignore_errors=True)  # this script's own output from an earlier run
    procs = (["--gpus", "0", "--nproc-per-node", str(args.procs)] if args.tiny else
             ["--gpu-ids", ",".join(str(i) for i in range(args.procs))])
    cmd = [sys.executable, "-m", "mgft.cli", "submit", "--backend", "local", *procs,
           "--strategy", cfg.strategy, "--tuning", cfg.tuning, "--model", str(model_dir),
           "--dataset", str(data), "--output", str(out), "--max-steps", str(args.steps),
           "--micro-batch", str(cfg.micro_batch), "--seq-len", str(args.seq_len),
           "--lr", "1e-5", "--save", "final"]
    row: dict[str, Any] = {"config": cfg.name, "arch": ARCHS[cfg.size],
                           "command": " ".join(cmd[2:]),
                           "predicted": plan_host(cfg, model_dir, args)}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=os.environ | GPU_SAFE_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        output, _ = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    finally:
        sampler.stop()
    row |= {"wall_s": round(time.perf_counter() - start, 1), "samples": sampler.samples,
            "exit": proc.returncode}
    if proc.returncode != 0:
        return row | {"status": f"failed (exit {proc.returncode})",
                      "tail": output.strip().splitlines()[-8:]}
    metrics = json.loads((out / "metrics.json").read_text())
    workers = sorted((hwm for _, hwm in sampler.hwm.values()), reverse=True)
    predicted = row["predicted"]["host_gib"] * GIB
    measured = sampler.node_peak
    return row | {"status": "ok", "measured_node_bytes": measured,
                  "measured_node_at_s": round(sampler.node_peak_at, 1),
                  "worker_hwm_bytes": workers, "error": (predicted - measured) / measured,
                  "series_gib": [(t, round(b / GIB, 2)) for t, b in sampler.series[::5]],
                  "log_tail": output.strip().splitlines()[-25:],
                  "ran": {k: metrics.get(k) for k in ("strategy", "world_size", "device",
                                                      "steps", "peak_memory_bytes")}}


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'config':<26} {'plan host GiB':>13} {'at':<6} {'measured GiB':>12} "
          f"{'worker peak':>11} {'error':>8}")
    for r in rows:
        plan = r["predicted"]
        head = f"{r['config']:<26} {plan['host_gib']:>13.1f} {plan['host_peak_at']:<6}"
        if r["status"] != "ok":
            print(f"{head} {r['status']}")
            continue
        worker = (r["worker_hwm_bytes"] or [0])[0] / GIB
        print(f"{head} {r['measured_node_bytes'] / GIB:>12.1f} {worker:>11.1f} "
              f"{r['error']:>+8.1%}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", help="comma-separated names (default: the zero3-offload "
                   "rows); known: " + ", ".join(c.name for c in CONFIGS))
    p.add_argument("--tiny", action="store_true", help="CPU plumbing check")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--timeout", type=int, default=420, help="seconds per configuration")
    p.add_argument("--work", type=Path,
                   default=Path(tempfile.gettempdir(), "mgft-bench", "host_memory"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.tiny:
        selected, args.procs, args.seq_len = TINY, 2, min(args.seq_len, 64)
    else:
        wanted = (args.configs or "1b-full-zero3-offload,3b-full-zero3-offload").split(",")
        unknown = set(wanted) - {c.name for c in CONFIGS}
        if unknown:
            p.error(f"--configs: unknown {sorted(unknown)}")
        selected, args.procs = [c for c in CONFIGS if c.name in wanted], 1
    args.out = args.out or Path("bench/results/host-memory" + ("-tiny" if args.tiny else "")
                                + ".json")
    rows: list[dict[str, Any]] = []
    for cfg in selected:
        rows.append(run_one(cfg, args))
        print(f"{cfg.name}: {rows[-1]['status']} ({rows[-1]['wall_s']} s)", flush=True)
        write(rows, args)  # after each row: a later one may be cut off by a time limit
    print_table(rows)
    for r in rows:  # the node's memory over the run: load, training plateau, final save
        series = r.get("series_gib") or []
        print(r["config"], " ".join(f"{t:.0f}s:{g:.1f}" for t, g in series[::max(
            1, len(series) // 40)]))
    print(f"wrote {args.out}")


def write(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import torch  # only for the record of versions

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    result = {"target": TARGET, "mode": "tiny-cpu" if args.tiny else "gpu", "gpu": gpu,
              "host_memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "torch": torch.__version__, "settings": {"steps": args.steps,
                                                       "seq_len": args.seq_len},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
