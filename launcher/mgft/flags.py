"""The CLI flags and the spec fields they set: one table, read both ways.

The CLI builds its options from it, and errors use it to name a field the way the user
wrote it (`--nodes` on the command line, `resources.nodes` in a YAML file).
"""

from __future__ import annotations

# flag -> dotted path in the YAML / JobSpec. Help text comes from the spec's field descriptions.
FLAGS: dict[str, str] = {
    "--backend": "backend",
    "--name": "name",
    "--image": "image",
    "--gpus": "resources.gpus",
    "--nodes": "resources.nodes",
    "--nproc-per-node": "resources.nproc_per_node",
    "--model": "train.model",
    "--dataset": "train.dataset",
    "--output": "train.output",
    "--strategy": "train.strategy",
    "--tuning": "train.tuning",
    "--max-steps": "train.max_steps",
    "--epochs": "train.epochs",
    "--lr": "train.lr",
    "--micro-batch": "train.micro_batch",
    "--grad-accum": "train.grad_accum",
    "--seq-len": "train.seq_len",
    "--seed": "train.seed",
    "--lora-r": "train.lora_r",
    "--lora-alpha": "train.lora_alpha",
    "--lora-dropout": "train.lora_dropout",
    "--lora-targets": "train.lora_targets",
    "--save-every": "train.save_every",
    "--keep-checkpoints": "train.keep_checkpoints",
    "--save-merged": "train.save_merged",
    "--random-init": "train.random_init",
    "--max-restarts": "max_restarts",
    "--k8s-api": "k8s.api",
    "--namespace": "k8s.namespace",
    "--shm-size": "k8s.shm_size",
    "--partition": "slurm.partition",
    "--time": "slurm.time",
    "--cpus-per-task": "slurm.cpus_per_task",
}

_BY_PATH = {path: flag for flag, path in FLAGS.items()}


def display_name(path: str) -> str:
    """How to name a spec field in an error: its flag if it has one, else its YAML path."""
    if path.startswith("env."):
        return f"--env {path.removeprefix('env.')}"
    return _BY_PATH.get(path, path)
