"""Operator emulation: a rendered PyTorchJob (Master + Worker) and a rendered TrainJob (2 nodes)
run as separate processes here, each pod with exactly the environment its operator would give
it, each running its container's command as the kubelet would (`$(VAR)` expansion included).
The job must complete with 4 gloo ranks and the loss must go down.

Two things differ from a cluster, on purpose and only these: Service DNS names are replaced by
loopback addresses (127.0.0.x, one per pod) in the injected values, and the operator's fixed
master port is swapped for a free one, since here all pods share one network namespace.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mgft.render import render

from tests import k8s_operators as ops
from tests.conftest import TORCH_RUNTIME, Tiny
from tests.launcher.render import cases

PORT_VARS = ("MASTER_PORT", "PET_MASTER_PORT")
pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_dns(value: str, hosts: dict[str, str], ports: dict[str, str]) -> str:
    """A Service name, or name:port, as the pods would reach it here."""
    for name, address in hosts.items():
        if value == name:
            return address
        if value.startswith(name + ":"):
            port = value[len(name) + 1:]
            return f"{address}:{ports.get(port, port)}"
    return value


def run_pods(cluster: ops.Cluster, workdir: Path, timeout: float = 420,
             ) -> list[tuple[ops.OperatorPod, subprocess.CompletedProcess[str]]]:
    hosts = {name: f"127.0.0.{i + 2}" for i, name in enumerate(cluster.service_names)}
    ports = {str(ops.V1_DEFAULT_PORT): str(free_port()), str(ops.V2_PORT): str(free_port())}
    procs = []
    for pod in cluster.pods:
        env = ops.container_env(pod.trainer, secrets={})
        env = {k: ports.get(v, v) if k in PORT_VARS else cluster_dns(v, hosts, ports)
               for k, v in env.items()}
        command = ops.container_command(pod.trainer, env)
        home = workdir / pod.hostname
        home.mkdir(parents=True)
        # What the container runtime sets: the pod's hostname; the image's PATH.
        base = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home),
                "HOSTNAME": pod.hostname}
        procs.append((pod, command, subprocess.Popen(
            command, env=base | env, cwd=home, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)))
    results = []
    for pod, command, proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for _, _, p in procs:
                p.kill()
            raise
        results.append((pod, subprocess.CompletedProcess(command, proc.returncode, out, "")))
    return results


def job_spec(tiny: Tiny, api: str):
    return cases.spec(**{
        "backend": "k8s", "image": "mgft:cpu", "k8s.api": api, "name": f"emu-{api}",
        "resources.gpus": 0, "resources.nodes": 2, "resources.nproc_per_node": 2,
        "train.model": str(tiny.model_dir), "train.dataset": str(tiny.data),
        "train.max_steps": 20, "train.micro_batch": 4, "train.seq_len": 64, "train.lr": 3e-3,
        "k8s.master_wait": 120})


def check_trained(results, master_dir: Path) -> dict:
    for pod, proc in results:
        assert proc.returncode == 0, f"{pod.name} failed:\n{proc.stdout[-4000:]}"
    metrics = json.loads((master_dir / "output" / "metrics.json").read_text())
    assert metrics["world_size"] == 4
    assert metrics["backend"] == "gloo"
    assert metrics["model_wrapper"] == "DistributedDataParallel"
    assert metrics["steps"] == 20
    assert metrics["last_loss"] < 0.85 * metrics["first_loss"], metrics["losses"]
    return metrics


def test_pytorchjob_master_and_worker_train_together(tiny: Tiny, tmp_path: Path) -> None:
    doc = yaml.safe_load(render(job_spec(tiny, "pytorchjob")))
    cluster = ops.pytorchjob(doc)
    assert [p.name for p in cluster.pods] == ["emu-pytorchjob-master-0",
                                             "emu-pytorchjob-worker-0"]
    results = run_pods(cluster, tmp_path)
    metrics = check_trained(results, tmp_path / "emu-pytorchjob-master-0")
    worker_log = results[1][1].stdout
    # The worker translated v1's injection into an explicit static rendezvous as node 1.
    assert "mgft-node: node 1 of 2, master 127.0.0.2:" in worker_log
    assert "--node-rank=1" in worker_log and "--nnodes=2" in worker_log
    print(f"\nPyTorchJob emulation: world {metrics['world_size']}, loss "
          f"{metrics['first_loss']:.3f} -> {metrics['last_loss']:.3f}")


def test_trainjob_two_nodes_train_together(tiny: Tiny, tmp_path: Path) -> None:
    doc = yaml.safe_load(render(job_spec(tiny, "trainjob")))
    runtime = yaml.safe_load(TORCH_RUNTIME.read_text())
    cluster = ops.trainjob(doc, runtime)
    assert [p.hostname for p in cluster.pods] == ["emu-trainjob-node-0-0",
                                                 "emu-trainjob-node-0-1"]
    results = run_pods(cluster, tmp_path)
    metrics = check_trained(results, tmp_path / "emu-trainjob-node-0-0")
    assert "mgft-node: node 1 of 2, master 127.0.0.2:" in results[1][1].stdout
    print(f"\nTrainJob emulation: world {metrics['world_size']}, loss "
          f"{metrics['first_loss']:.3f} -> {metrics['last_loss']:.3f}")


def test_worker_without_master_fails_clearly_within_the_deadline(tiny: Tiny,
                                                                 tmp_path: Path) -> None:
    """Only the worker pod runs (the master never comes up): a clear error, not a hang."""
    spec = job_spec(tiny, "pytorchjob")
    doc = yaml.safe_load(render(spec).replace("--master-wait=120", "--master-wait=3"))
    cluster = ops.pytorchjob(doc)
    cluster = ops.Cluster(pods=cluster.pods[1:], service_names=cluster.service_names[1:])
    (pod, proc), = run_pods(cluster, tmp_path, timeout=60)
    assert proc.returncode == 1, proc.stdout
    assert "mgft-node: error: gave up after 3 s waiting for the master" in proc.stdout
    assert "emu-pytorchjob-master-0" in proc.stdout and "does not resolve" in proc.stdout
    assert "torchrun" not in proc.stdout.split("error:")[0]
    assert os.listdir(tmp_path / pod.hostname) == []
