"""A two-node rehearsal on one host: the PyTorchJob `mgft render --backend k8s --nodes 2`
prints, run as two node processes, each given its own GPUs and the environment a Kubeflow v1
operator injects (mgft.contract.env.OperatorEnv: node rank, master address and port), so
`mgft-node` makes the same rendezvous a two-node Kubernetes job makes. NCCL is kept off
NVLink and shared memory between the nodes (P2P and SHM disabled: traffic goes through the
network stack), as between two hosts.

    python bench/two_node.py --out OUT --gpus-per-node 2 [-- extra mgft render flags]
    python bench/two_node.py --tiny --out OUT       (CPU: 2 x 2 gloo ranks, the tiny model)

Writes OUT/two-node.json: each node's exit code, the trainer's metrics (world size, tokens/s
per GPU, peak memory, losses) and each node's log.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_assets import GPU_SAFE_ENV, model_config, training_rows  # noqa: E402

# Between "nodes" on one host: no NVLink peer access, no shared-memory transport.
AS_TWO_HOSTS = {"NCCL_P2P_DISABLE": "1", "NCCL_SHM_DISABLE": "1"}


def node_command(render_args: list[str]) -> list[str]:
    """The Master pod's container command, from `mgft render` (the same words the Worker
    runs; only the operator's environment differs)."""
    import yaml

    text = subprocess.run([sys.executable, "-m", "mgft.cli", "render", "--backend", "k8s",
                           "--nodes", "2", "--image", "mgft:bench", *render_args],
                          check=True, capture_output=True, text=True).stdout
    job = next(d for d in yaml.safe_load_all(text) if d and d.get("kind") == "PyTorchJob")
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    words = [*container["command"], *container.get("args", [])]
    assert not any("$" in w for w in words), "kubelet $(VAR) expansion is not emulated here"
    return words


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    from mgft.contract.env import OperatorEnv

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--gpus-per-node", type=int, default=2)
    p.add_argument("--arch", default="llama-3-8b")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--timeout", type=float, default=540)
    args, extra = p.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    args.out.mkdir(parents=True, exist_ok=True)
    arch = "tiny" if args.tiny else args.arch
    model_dir = model_config(arch, args.out / "work" / f"model-{arch}")
    seq_len = 128 if args.tiny else 4096
    data = training_rows(model_dir, args.out / "work" / "rows.jsonl", 64 if args.tiny else 800,
                         seq_len, spread=(0.05, 0.5))
    gpus = 0 if args.tiny else args.gpus_per_node
    procs = ["--gpus", "0", "--nproc-per-node", "2"] if args.tiny else ["--gpus", str(gpus)]
    output = args.out / "work" / "output"
    command = node_command([*procs, "--model", str(model_dir), "--dataset", str(data),
                            "--output", str(output), "--max-steps", str(args.steps),
                            "--seq-len", str(seq_len), "--micro-batch", "1",
                            "--random-init", "--save", "none", "--master-wait", "120", *extra])
    port = free_port()
    nodes = []
    for rank in (0, 1):
        operator = OperatorEnv(nnodes="2", nproc_per_node=str(2 if args.tiny else gpus),
                               node_rank=rank, master_addr="127.0.0.1", master_port=port)
        env = os.environ | GPU_SAFE_ENV | AS_TWO_HOSTS | operator.to_env() | {
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "CUDA_VISIBLE_DEVICES": "" if args.tiny else ",".join(
                str(rank * gpus + i) for i in range(gpus))}
        if args.tiny:
            env["OMP_NUM_THREADS"] = "1"
        log = open(args.out / f"node{rank}.log", "w")  # noqa: SIM115 (closed after wait)
        nodes.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       cwd=args.out), log))
    start = time.monotonic()
    codes = []
    for proc, log in nodes:
        try:
            codes.append(proc.wait(timeout=max(1.0, args.timeout - (time.monotonic() - start))))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append("timeout")
        log.close()
    result: dict[str, Any] = {"command": command, "exit": codes,
                              "wall_s": round(time.monotonic() - start, 1)}
    metrics_file = output / "metrics.json"
    if metrics_file.is_file():
        m = json.loads(metrics_file.read_text())
        result |= {k: m.get(k) for k in ("world_size", "backend", "strategy", "losses",
                                         "tokens_per_s_per_gpu_or_proc", "peak_memory_bytes")}
    (args.out / "two-node.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "command"}))
    return 0 if codes == [0, 0] else 1


if __name__ == "__main__":
    sys.exit(main())
