"""The job spec: one frozen, typed description of a fine-tuning job.

Every backend reads a `JobSpec`; none writes one. `mgft.config.build_spec` is the only
place that creates and validates it. Field descriptions here are the single source of
the YAML schema (`mgft config schema`) and of the CLI `--help` text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field

_STRICT = ConfigDict(extra="forbid")


class Backend(StrEnum):
    LOCAL = "local"
    SLURM = "slurm"
    K8S = "k8s"


class Strategy(StrEnum):
    DDP = "ddp"
    FSDP = "fsdp"
    ZERO1 = "zero1"
    ZERO2 = "zero2"
    ZERO3 = "zero3"
    ZERO3_OFFLOAD = "zero3-offload"
    MP = "mp"


class Tuning(StrEnum):
    LORA = "lora"
    QLORA = "qlora"
    FULL = "full"


class K8sApi(StrEnum):
    PYTORCHJOB = "pytorchjob"
    TRAINJOB = "trainjob"


@dataclass(frozen=True, kw_only=True, slots=True)
class Resources:
    __pydantic_config__ = _STRICT

    gpus: Annotated[int, Field(ge=0, le=64, description=(
        "GPUs per node. 0 runs on CPU with the gloo backend."))] = 1
    nodes: Annotated[int, Field(ge=1, le=4096, description="Number of nodes.")] = 1
    nproc_per_node: Annotated[int | None, Field(ge=1, le=256, description=(
        "Trainer processes per node. Defaults to one per GPU (1 with --strategy mp, "
        "1 on CPU)."))] = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainSpec:
    """What the trainer does. It crosses to the trainer as argv (`mgft.train_args`)."""

    __pydantic_config__ = _STRICT

    model: Annotated[str, Field(min_length=1, description=(
        "Model directory (config, weights and tokenizer) as seen by the job."))]
    dataset: Annotated[str, Field(min_length=1, description=(
        "Training data file as seen by the job (alpaca-style jsonl)."))]
    output: Annotated[str, Field(min_length=1, description=(
        "Directory for the adapter, metrics.json and logs. Must be new or empty."))] = "output"
    strategy: Annotated[Strategy, Field(description=(
        "Parallelism: ddp, fsdp, zero1, zero2, zero3, zero3-offload or mp."))] = Strategy.DDP
    tuning: Annotated[Tuning, Field(description=(
        "What is trained: lora, qlora (4-bit base) or full."))] = Tuning.LORA
    max_steps: Annotated[int | None, Field(ge=1, description=(
        "Stop after this many optimizer steps (overrides --epochs)."))] = None
    epochs: Annotated[float, Field(gt=0, le=1000, description=(
        "Passes over the dataset."))] = 1.0
    lr: Annotated[float, Field(gt=0, lt=1, description="Peak learning rate.")] = 2e-4
    micro_batch: Annotated[int, Field(ge=1, le=4096, description=(
        "Sequences per process per forward pass."))] = 4
    grad_accum: Annotated[int, Field(ge=1, le=4096, description=(
        "Micro-batches accumulated per optimizer step."))] = 1
    seq_len: Annotated[int, Field(ge=16, le=1_048_576, description=(
        "Maximum tokens per sequence; longer samples are truncated."))] = 1024
    seed: Annotated[int, Field(ge=0, description="Random seed for data order and init.")] = 0
    lora_r: Annotated[int, Field(ge=1, le=4096, description="LoRA rank.")] = 16
    lora_alpha: Annotated[float, Field(gt=0, description="LoRA alpha (scale = alpha / r).")] = 32.0
    lora_dropout: Annotated[float, Field(ge=0, lt=1, description="LoRA dropout.")] = 0.05
    lora_targets: Annotated[str, Field(min_length=1, description=(
        "Modules that get LoRA adapters: all-linear (every linear projection except the output "
        "head) or comma-separated module names, e.g. q_proj,v_proj."))] = "all-linear"
    save_every: Annotated[int, Field(ge=1, description=(
        "Write a checkpoint every N optimizer steps, and at the end. A run restarted with the "
        "same --output resumes from the latest one."))] = 100
    keep_checkpoints: Annotated[int, Field(ge=1, le=1000, description=(
        "Checkpoints to keep; older ones are deleted once a newer one is complete."))] = 2
    save_merged: Annotated[bool, Field(description=(
        "Also save the model with the LoRA adapter merged in, as Hugging Face safetensors "
        "(gathered from FSDP or ZeRO-3 shards)."))] = False
    random_init: Annotated[bool, Field(description=(
        "Build the model from --model's config.json with random weights instead of loading "
        "weights (for benchmarks; the directory needs no weight files)."))] = False


@dataclass(frozen=True, kw_only=True, slots=True)
class K8sSpec:
    __pydantic_config__ = _STRICT

    api: Annotated[K8sApi, Field(description=(
        "Kubeflow API: pytorchjob (training operator v1) or trainjob (Trainer v2)."))] = (
        K8sApi.PYTORCHJOB)
    namespace: Annotated[str, Field(description="Kubernetes namespace.")] = "default"
    shm_size: Annotated[str, Field(description=(
        "Size of the in-memory /dev/shm volume (Kubernetes quantity)."))] = "16Gi"
    runtime: Annotated[str, Field(description=(
        "TrainJob runtime (ClusterTrainingRuntime name)."))] = "torch-distributed"


@dataclass(frozen=True, kw_only=True, slots=True)
class SlurmSpec:
    __pydantic_config__ = _STRICT

    partition: Annotated[str | None, Field(description="Slurm partition.")] = None
    time: Annotated[str, Field(description=(
        "Slurm time limit, e.g. 04:00:00 or 2-00:00:00."))] = "04:00:00"
    cpus_per_task: Annotated[int | None, Field(ge=1, le=1024, description=(
        "CPUs for each node's task. Defaults to 8 per GPU."))] = None


@dataclass(frozen=True, kw_only=True, slots=True)
class JobSpec:
    __pydantic_config__ = _STRICT

    train: TrainSpec
    name: Annotated[str | None, Field(description=(
        "Job name (DNS-1035 label). Derived from the spec when not given."))] = None
    backend: Annotated[Backend, Field(description="Where the job runs: local, slurm or k8s.")] = (
        Backend.LOCAL)
    image: Annotated[str | None, Field(description=(
        "Container image with the mgft trainer (required for k8s)."))] = None
    env: Annotated[dict[str, str], Field(description=(
        "Extra environment variables for every trainer process."))] = field(default_factory=dict)
    resources: Annotated[Resources, Field(description="Nodes, GPUs and processes.")] = field(
        default_factory=Resources)
    k8s: Annotated[K8sSpec, Field(description="Kubernetes options.")] = field(
        default_factory=K8sSpec)
    slurm: Annotated[SlurmSpec, Field(description="Slurm options.")] = field(
        default_factory=SlurmSpec)
    max_restarts: Annotated[int, Field(ge=0, le=100, description=(
        "Local backend: how often torchrun restarts all workers after one fails; they resume "
        "from the latest checkpoint."))] = 0

    @property
    def job_name(self) -> str:
        assert self.name is not None, "build_spec always fills in the name"
        return self.name

    @property
    def nproc_per_node(self) -> int:
        assert self.resources.nproc_per_node is not None, "build_spec fills this in"
        return self.resources.nproc_per_node

    @property
    def world_size(self) -> int:
        return self.resources.nodes * self.nproc_per_node

    @property
    def on_cpu(self) -> bool:
        return self.resources.gpus == 0
