"""The CLI flags and the spec fields they set: one table, read both ways.

The CLI builds its options from it, and errors use it to name a field the way the user
wrote it (`--nodes` on the command line, `resources.nodes` in a YAML file).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

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
    "--data-format": "train.data_format",
    "--chat-template": "train.chat_template",
    "--train-on-prompt": "train.train_on_prompt",
    "--packing": "train.packing",
    "--overlong": "train.overlong",
    "--eval-dataset": "train.eval_dataset",
    "--eval-split": "train.eval_split",
    "--eval-every": "train.eval_every",
    "--data-cache": "train.data_cache",
    "--kernels": "train.kernels",
    "--compile": "train.compile",
    "--activation-checkpointing": "train.activation_checkpointing",
    "--lora-dropout-recompute": "train.lora_dropout_recompute",
    "--precision": "train.precision",
    "--lora-targets": "train.lora_targets",
    "--save": "train.save",
    "--save-every": "train.save_every",
    "--keep-checkpoints": "train.keep_checkpoints",
    "--save-merged": "train.save_merged",
    "--random-init": "train.random_init",
    "--report-to": "train.report_to",
    "--max-restarts": "max_restarts",
    "--k8s-api": "k8s.api",
    "--namespace": "k8s.namespace",
    "--shm-size": "k8s.shm_size",
    "--pod-security": "k8s.pod_security",
    "--backoff-limit": "k8s.backoff_limit",
    "--master-wait": "k8s.master_wait",
    "--config-map": "k8s.config_map",
    "--pvc": "k8s.pvc",
    "--pvc-size": "k8s.pvc_size",
    "--storage-class": "k8s.storage_class",
    "--mount-path": "k8s.mount_path",
    "--hf-token-secret": "k8s.hf_token_secret",
    "--wandb-secret": "k8s.wandb_secret",
    "--image-pull-secret": "k8s.image_pull_secrets",
    "--node-selector": "k8s.node_selector",
    "--priority-class": "k8s.priority_class",
    "--scheduler-name": "k8s.scheduler_name",
    "--kueue-queue": "k8s.kueue_queue",
    "--volcano-queue": "k8s.volcano_queue",
    "--elastic-min-nodes": "k8s.elastic_min_nodes",
    "--elastic-max-nodes": "k8s.elastic_max_nodes",
    "--elastic-max-restarts": "k8s.max_restarts",
    "--partition": "slurm.partition",
    "--time": "slurm.time",
    "--cpus-per-task": "slurm.cpus_per_task",
    "--gpu-ids": "resources.gpu_ids",
    "--exclusive": "resources.exclusive",
    "--fabric": "dist.fabric",
    "--debug-dist": "dist.debug",
    "--dist-timeout": "dist.timeout",
    "--preflight": "dist.preflight",
    "--arch": "plan.arch",
    "--gpu-memory": "plan.gpu_memory_gib",
    "--account": "slurm.account",
    "--qos": "slurm.qos",
    "--mem": "slurm.mem",
    "--constraint": "slurm.constraint",
    "--reservation": "slurm.reservation",
    "--container": "slurm.container",
}

# `mgft generate`'s own flags; it also takes the job flags that are not about training.
GENERATE_FLAGS: dict[str, str] = {
    "--adapter": "generate.adapter",
    "--max-new-tokens": "generate.max_new_tokens",
    "--min-new-tokens": "generate.min_new_tokens",
    "--temperature": "generate.temperature",
    "--top-p": "generate.top_p",
    "--chat-template": "generate.chat_template",
}

# Built from each table on its own: both name a `--chat-template` (train.chat_template and
# generate.chat_template), and a merged dict would keep only one of the two.
_BY_PATH = {path: flag for table in (FLAGS, GENERATE_FLAGS) for flag, path in table.items()}


# The flags of the command being run: `mgft generate` names train.dataset `--prompts`.
_COMMAND_FLAGS: ContextVar[Mapping[str, str] | None] = ContextVar("command_flags", default=None)


@contextlib.contextmanager
def naming(flags: Mapping[str, str]) -> Iterator[None]:
    """Name fields by this command's flags (flag -> path) in the errors raised inside."""
    token = _COMMAND_FLAGS.set({path: flag for flag, path in flags.items()})
    try:
        yield
    finally:
        _COMMAND_FLAGS.reset(token)


def display_name(path: str) -> str:
    """How to name a spec field in an error: its flag if it has one, else its YAML path."""
    command = _COMMAND_FLAGS.get()
    if command is not None and path in command:
        return command[path]
    if path.startswith("env."):
        return f"--env {path.removeprefix('env.')}"
    if path.startswith("dist.nccl."):
        return f"--nccl {path.removeprefix('dist.nccl.')}"
    return _BY_PATH.get(path, path)
