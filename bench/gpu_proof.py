"""GPU proof for issue 6, on a 4-GPU machine: GPU selection next to a busy neighbour, fabric
resolution in a real job, and all-reduce bus bandwidth through `mgft doctor --bandwidth`
against plain torch.

    python bench/gpu_proof.py --out OUT   (prints a table, writes OUT/gpu-proof.json)

1. `mgft doctor` on the idle machine.
2. Two burners hold 20 GiB and run matmuls on GPUs 0 and 1.
3. `mgft gpus --gpus 2`, `mgft render --backend local --gpus 2`, `--gpu-ids 0 --exclusive`,
   and a real `mgft submit --backend local --gpus 2` of the tiny model while 0 and 1 are busy.
4. Burners stop; `mgft doctor --bandwidth` on all 4 GPUs, then plain torch, same sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MGFT = [sys.executable, "-m", "mgft.cli"]
# NVLink multicast can take all of the shared host's GPUs down (seen on the H200 hosts).
SAFE = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
        "NVSHMEM_DISABLE_NVLS": "1"}


def run(out: Path, name: str, argv: list[str], env: dict[str, str],
        timeout: float = 240) -> dict[str, Any]:
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as err:
        code, stdout, stderr = 124, str(err.stdout or ""), str(err.stderr or "")
    secs = time.monotonic() - start
    (out / f"{name}.txt").write_text(f"$ {' '.join(argv)}\n# exit {code}, {secs:.1f} s\n"
                                     f"--- stdout\n{stdout}\n--- stderr\n{stderr}")
    print(f"[{name}] exit {code} in {secs:.1f} s", flush=True)
    return {"exit": code, "seconds": round(secs, 1), "stdout": stdout, "stderr": stderr}


def wait_ready(paths: list[Path], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > end:
            raise SystemExit(f"burners not ready after {timeout} s")
        time.sleep(0.5)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ) | SAFE
    env.pop("CUDA_VISIBLE_DEVICES", None)
    record: dict[str, Any] = {}

    record["nvidia_smi"] = run(out, "nvidia-smi", ["nvidia-smi"], env)["stdout"]
    record["topology"] = run(out, "topology", ["nvidia-smi", "topo", "-m"], env)["stdout"]
    record["doctor"] = run(out, "doctor", [*MGFT, "doctor", "--json", str(out / "doctor.json")],
                           env)["exit"]

    stop = out / "burn.stop"
    ready = [out / f"burn{i}.ready" for i in (0, 1)]
    burners = [subprocess.Popen(
        [sys.executable, str(HERE / "gpu_burn.py"), "--gib", "20", "--ready", str(r),
         "--stop", str(stop)],
        env=env | {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(i)})
        for i, r in zip((0, 1), ready, strict=True)]
    try:
        wait_ready(ready)
        time.sleep(2)  # NVML's utilization sample covers the last ~1 s
        record["gpus_busy"] = run(out, "gpus-2-while-0-1-busy", [*MGFT, "gpus", "--gpus", "2"],
                                  env)
        record["exclusive"] = run(out, "gpu-ids-0-exclusive",
                                  [*MGFT, "gpus", "--gpu-ids", "0", "--exclusive"], env)
        tiny = out / "tiny"
        run(out, "tiny-build", [sys.executable, "-m", "mgft_train.demo_assets", "--out", str(tiny),
                                "--force"], env)
        job = ["--backend", "local", "--gpus", "2", "--model", str(tiny / "model"),
               "--dataset", str(tiny / "data.jsonl"), "--output", str(out / "run"),
               "--max-steps", "20", "--seq-len", "128", "--micro-batch", "8", "--preflight"]
        record["render"] = run(out, "render-local-gpus-2", [*MGFT, "render", *job], env)
        done = threading.Event()
        samples: list[dict[str, float]] = []
        sampler = threading.Thread(target=sample_memory, args=(samples, done), daemon=True)
        sampler.start()
        record["submit"] = run(out, "submit-local-gpus-2", [*MGFT, "submit", *job], env,
                               timeout=300)
        done.set()
        sampler.join()
        record["memory_during_submit"] = samples
        metrics = out / "run" / "metrics.json"
        record["metrics"] = json.loads(metrics.read_text()) if metrics.is_file() else None
    finally:
        stop.write_text("stop")
        for b in burners:
            try:
                b.wait(timeout=60)
            except subprocess.TimeoutExpired:
                b.kill()
    time.sleep(3)
    record["gpus_idle"] = run(out, "gpus-after-burners", [*MGFT, "gpus"], env)
    bw = out / "doctor-bandwidth.json"
    record["bandwidth"] = run(out, "doctor-bandwidth",
                              [*MGFT, "doctor", "--bandwidth", "--json", str(bw)], env)
    plain = out / "plain-torch.json"
    record["plain"] = run(out, "plain-torch",
                          [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node=4",
                           str(HERE / "allreduce_torch.py"), "--out", str(plain)], env)
    summary = summarize(bw, plain)
    record["summary"] = summary
    (out / "gpu-proof.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


def sample_memory(samples: list[dict[str, float]], done: threading.Event) -> None:
    """GPU memory in use (MiB) once a second while the job runs: where the job really is."""
    while not done.wait(1.0):
        try:
            text = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used,utilization.gpu",
                                   "--format=csv,noheader,nounits"], capture_output=True,
                                  text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        row = {}
        for line in text.strip().splitlines():
            index, used, util = (part.strip() for part in line.split(","))
            row[f"gpu{index}_mib"] = float(used)
            row[f"gpu{index}_util"] = float(util)
        samples.append(row)


def summarize(bw: Path, plain: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if bw.is_file():
        sweep = json.loads(bw.read_text())["bandwidth"]
        result["mgft"] = {r["bytes"]: round(r["busbw_gbs"], 1) for r in sweep["results"]}
        result["fabric"] = sweep.get("fabric")
        result["expected"] = sweep.get("expected")
    if plain.is_file():
        base = json.loads(plain.read_text())
        result["plain_torch"] = {r["bytes"]: round(r["busbw_gbs"], 1) for r in base["results"]}
    print(f"{'size':>12} {'mgft busbw':>12} {'plain busbw':>12}")
    for size in sorted(set(result.get("mgft", {})) | set(result.get("plain_torch", {}))):
        print(f"{size:>12} {result.get('mgft', {}).get(size, '-'):>12} "
              f"{result.get('plain_torch', {}).get(size, '-'):>12}")
    return result


if __name__ == "__main__":
    main()
