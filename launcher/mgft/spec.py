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
    # Not a strategy the trainer runs: build_spec replaces it with the one `mgft plan` picks.
    AUTO = "auto"


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
        "Parallelism: ddp, fsdp, zero1, zero2, zero3, zero3-offload or mp; auto picks one "
        "from a memory estimate (`mgft plan`)."))] = Strategy.DDP
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
class PlanSpec:
    """How `--strategy auto` sizes the job (the same estimate `mgft plan` prints)."""

    __pydantic_config__ = _STRICT

    arch: Annotated[str | None, Field(description=(
        "Architecture to size for --strategy auto when --model is not readable here: a known "
        "name such as llama-3-8b, or a config.json path."))] = None
    gpu_memory_gib: Annotated[float, Field(gt=0, le=4096, description=(
        "Memory of each GPU in GiB, for --strategy auto."))] = 80.0
    margin: Annotated[float, Field(ge=0, lt=0.9, description=(
        "Fraction of GPU memory --strategy auto keeps free."))] = 0.10


@dataclass(frozen=True, kw_only=True, slots=True)
class GenerateSpec:
    """Batch generation instead of training (`mgft generate`). The job reads train.model (plus
    the adapter) and the prompts in train.dataset, runs train.micro_batch prompts per forward
    pass, seeds sampling with train.seed and writes train.output/generations.jsonl."""

    __pydantic_config__ = _STRICT

    adapter: Annotated[str | None, Field(min_length=1, description=(
        "LoRA adapter directory applied to the base model, as seen by the job."))] = None
    max_new_tokens: Annotated[int, Field(ge=1, le=1_000_000, description=(
        "Most tokens generated per prompt."))] = 256
    min_new_tokens: Annotated[int, Field(ge=0, le=1_000_000, description=(
        "Fewest tokens generated per prompt (end-of-sequence is ignored until then)."))] = 0
    temperature: Annotated[float, Field(ge=0, le=100, description=(
        "Sampling temperature; 0 decodes greedily."))] = 0.0
    top_p: Annotated[float, Field(gt=0, le=1, description=(
        "Nucleus sampling: sample from the smallest set of tokens with this much "
        "probability."))] = 1.0
    chat_template: Annotated[bool, Field(description=(
        "Render prompts with the tokenizer's chat template."))] = False


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
    plan: Annotated[PlanSpec, Field(description="How --strategy auto sizes the job.")] = field(
        default_factory=PlanSpec)
    generate: Annotated[GenerateSpec | None, Field(description=(
        "When set, the job generates completions for train.dataset instead of training."))] = (
        None)

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
