"""The job spec: one frozen, typed description of a fine-tuning job.

Every backend reads a `JobSpec`; none writes one. `mgft.spec.build.build_spec` is the only
place that creates and validates it. Field descriptions here are the single source of
the YAML schema (`mgft config schema`) and of the CLI `--help` text; the choices its fields
take are in `mgft.spec.choices`.
"""

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from mgft.spec.choices import (
    Backend,
    Compile,
    DataFormat,
    Fabric,
    K8sApi,
    Kernels,
    Overlong,
    PodSecurity,
    Precision,
    Save,
    SlurmContainer,
    Strategy,
    Tracker,
    Tuning,
)

_STRICT = ConfigDict(extra="forbid")


def _comma_words(value: Any) -> Any:
    """`tensorboard,wandb` or `0,2` (a flag or --set) -> ("tensorboard", "wandb"); a YAML
    list is left to the field's type."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _id_list(value: Any) -> Any:
    """`0,2` (a flag or --set), `[0, 2]` or `["GPU-..."]` (YAML) -> ("0", "2")."""
    if isinstance(value, str):
        return _comma_words(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return (str(value),)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class Resources:
    __pydantic_config__ = _STRICT

    gpus: Annotated[int, Field(ge=0, le=64, description=(
        "GPUs per node. 0 runs on CPU with the gloo backend."))] = 1
    nodes: Annotated[int, Field(ge=1, le=4096, description="Number of nodes.")] = 1
    nproc_per_node: Annotated[int | None, Field(ge=1, le=256, description=(
        "Trainer processes per node. Defaults to one per GPU (1 with --strategy mp, "
        "1 on CPU)."))] = None
    gpu_ids: Annotated[tuple[str, ...] | None, Field(description=(
        "Use exactly these GPUs of this machine (local backend): indices as nvidia-smi "
        "shows them, GPU-/MIG- UUIDs, comma-separated. --gpus defaults to their count."))] = None
    exclusive: Annotated[bool, Field(description=(
        "Refuse GPUs that another process is using (local backend)."))] = False

    @field_validator("gpu_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        return _id_list(value)

    @model_validator(mode="before")
    @classmethod
    def _gpus_from_ids(cls, data: Any) -> Any:
        # `--gpu-ids 0,2` alone means two GPUs; an explicit --gpus is checked against it later.
        if isinstance(data, dict) and data.get("gpu_ids") is not None and "gpus" not in data:
            ids = _id_list(data["gpu_ids"])
            if isinstance(ids, tuple):
                data = {**data, "gpus": len(ids)}
        return data


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainSpec:
    """What the trainer does. It crosses to the trainer as argv (`mgft.contract.argv`)."""

    __pydantic_config__ = _STRICT

    model: Annotated[str, Field(min_length=1, description=(
        "Model directory (config, weights and tokenizer) as seen by the job."))]
    dataset: Annotated[str, Field(min_length=1, description=(
        "Training data as seen by the job: a .jsonl, .json or .parquet file, or a directory "
        "written by datasets' save_to_disk."))]
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
        "Maximum tokens per sequence; see --overlong for longer samples."))] = 1024
    seed: Annotated[int, Field(ge=0, description="Random seed for data order and init.")] = 0
    lora_r: Annotated[int, Field(ge=1, le=4096, description="LoRA rank.")] = 16
    lora_alpha: Annotated[float, Field(gt=0, description="LoRA alpha (scale = alpha / r).")] = 32.0
    lora_dropout: Annotated[float, Field(ge=0, lt=1, description="LoRA dropout.")] = 0.05
    data_format: Annotated[DataFormat, Field(description=(
        "Dataset format: auto (told from the first row's keys), alpaca, sharegpt, messages, "
        "text or prompt_completion."))] = DataFormat.AUTO
    chat_template: Annotated[str | None, Field(min_length=1, description=(
        "Chat template for sharegpt and messages data: chatml, llama3 or a .jinja file. "
        "Defaults to the tokenizer's own."))] = None
    train_on_prompt: Annotated[bool, Field(description=(
        "Also train on prompts (instructions, user and system turns). By default the loss "
        "covers the responses only."))] = False
    packing: Annotated[bool, Field(description=(
        "Pack several samples into each --seq-len sequence, no padding; attention never "
        "crosses from one sample to another."))] = True
    overlong: Annotated[Overlong, Field(description=(
        "Samples longer than --seq-len: truncate (keep the start) or drop."))] = (
        Overlong.TRUNCATE)
    eval_dataset: Annotated[str | None, Field(min_length=1, description=(
        "Held-out data to evaluate on, as seen by the job, in any --dataset format; never "
        "trained on. Its loss is reported every --eval-every steps and at the end."))] = None
    eval_split: Annotated[float | None, Field(gt=0, lt=1, description=(
        "Hold out this fraction of --dataset's rows for evaluation, never trained on: "
        "rows x FRACTION rounded to the nearest row, the last ones after a shuffle of the "
        "rows seeded with --seed (so the same seed holds out the same rows)."))] = None
    eval_every: Annotated[int | None, Field(ge=1, description=(
        "Evaluate on the eval set (--eval-dataset or --eval-split) every N optimizer steps; "
        "it is always evaluated at the end."))] = None
    data_cache: Annotated[str | None, Field(min_length=1, description=(
        "Directory for the tokenized and packed data, built once and memory-mapped by every "
        "rank; runs that read the same bytes with the same tokenizer and data flags share "
        "it. Defaults to <output>/data-cache (a resumed run reuses it); none turns it "
        "off."))] = None
    kernels: Annotated[Kernels, Field(description=(
        "Faster GPU kernels: liger (Liger's Triton RMSNorm, SwiGLU, RoPE and fused linear "
        "cross-entropy, which never holds the full logits), none, or auto: liger on CUDA "
        "when liger-kernel is installed. Except with none, packed batches on GPUs use "
        "varlen flash attention, one sample at a time. fp8: auto's kernels, and LoRA's "
        "frozen base weights quantized once to FP8 (e4m3, per-row scales) for the forward "
        "and input-gradient matmuls; changes the numbers (about 3.5% per matmul); "
        "--tuning lora, --strategy ddp, an H100/H200-class GPU."))] = Kernels.AUTO
    compile: Annotated[Compile, Field(description=(
        "blocks: torch.compile each transformer block (one graph per block class, reused by "
        "every layer; attention stays the trainer's kernel, and Inductor fuses the norms, "
        "activations and RoPE in place of Liger's). On one H100, 8B LoRA +8-10% tokens/s, "
        "QLoRA +10-16%, for about 30 s of compiling in the first steps. The same "
        "arithmetic, proven per family; dropout masks come from Inductor's random stream. "
        "--strategy ddp, without --lora-dropout-recompute."))] = Compile.NONE
    activation_checkpointing: Annotated[bool, Field(description=(
        "Recompute each transformer block's activations in the backward pass: about a third "
        "more compute for a fraction of the activation memory."))] = False
    lora_dropout_recompute: Annotated[bool, Field(description=(
        "Recompute LoRA's dropout in the backward pass instead of keeping its output and "
        "mask per adapter: the same masks and numbers, about a fifth less memory at 8B "
        "(43.2 -> 34.5 GiB LoRA, 33.6 -> 24.9 GiB QLoRA, 4 packs of 1024 on an H100) for "
        "about a quarter fewer tokens/s there. ddp, zero1, zero2 or mp."))] = False
    precision: Annotated[Precision, Field(description=(
        "Where trained weights' updates accumulate on GPUs: mixed (fp32 master weights, bf16 "
        "compute; 16 bytes per trained parameter), bf16-kahan (bf16 weights, AdamW with "
        "Kahan-compensated updates; 12 bytes; ddp, fsdp or mp) or bf16 (pure bf16: updates "
        "under ~0.4% of a weight are lost; 8 bytes; ddp, fsdp or mp). CPUs train in fp32."
    ))] = Precision.MIXED

    lora_targets: Annotated[str, Field(min_length=1, description=(
        "Modules that get LoRA adapters: all-linear (every linear projection except the output "
        "head) or comma-separated module names, e.g. q_proj,v_proj."))] = "all-linear"
    save: Annotated[Save, Field(description=(
        "What is written: checkpoints (resumable ones every --save-every steps and at the "
        "end, plus the final adapter or model), final (only the final adapter or model; a "
        "stopped run cannot resume) or none (only metrics.json: benchmarks)."))] = (
        Save.CHECKPOINTS)
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
    report_to: Annotated[tuple[Tracker, ...], BeforeValidator(_comma_words), Field(
        min_length=1, description=(
            "Where rank 0 logs loss, eval loss, learning rate, tokens/s and peak memory per "
            "step, with the job's options as the run's config: tensorboard (under --output), "
            "wandb, mlflow, several comma-separated, or none. wandb and mlflow need "
            "mgft[track] in the image; a resumed run continues the same tracker run."))] = (
        (Tracker.TENSORBOARD,))


def _comma_list(value: object) -> object:
    """`--image-pull-secret a,b` arrives as one string; YAML gives a list."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _key_values(value: object) -> object:
    """`--node-selector gpu=a100,zone=b` arrives as one string; YAML gives a mapping."""
    if isinstance(value, str):
        pairs = [part.partition("=") for part in value.split(",") if part.strip()]
        if any(not sep for _, sep, _ in pairs):
            return value  # pydantic then reports that a mapping is expected
        return {k.strip(): v.strip() for k, _, v in pairs}
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class Toleration:
    __pydantic_config__ = _STRICT

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


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
    pod_security: Annotated[PodSecurity, Field(description=(
        "Pod security: restricted (non-root, no privilege escalation, all capabilities "
        "dropped, RuntimeDefault seccomp) or none for images that must run as root."))] = (
        PodSecurity.RESTRICTED)
    backoff_limit: Annotated[int | None, Field(ge=0, le=100, description=(
        "PyTorchJob: pod restarts before the job fails (3 when unset). TrainJob takes it "
        "from its runtime."))] = None
    master_wait: Annotated[int, Field(ge=10, le=86400, description=(
        "Seconds each pod waits for the master's DNS name and port before failing."))] = 600
    config_map: Annotated[bool, Field(description=(
        "Also create a ConfigMap with this job's config, mounted at /etc/mgft/job.yaml."))] = (
        False)
    pvc: Annotated[str | None, Field(description=(
        "PersistentVolumeClaim mounted at k8s.mount_path for outputs and checkpoints "
        "(existing, or created with --pvc-size)."))] = None
    pvc_size: Annotated[str | None, Field(description=(
        "Create the claim (named --pvc, default <job>-output) with this size, e.g. 100Gi; "
        "an existing claim of that name is reused, never replaced."))] = None
    storage_class: Annotated[str | None, Field(description=(
        "StorageClass of the claim mgft creates."))] = None
    mount_path: Annotated[str, Field(description=(
        "Where the claim is mounted; also the trainer's working directory, so a relative "
        "--output lands on the claim."))] = "/workspace"
    hf_token_secret: Annotated[str | None, Field(description=(
        "Secret with a Hugging Face token, as NAME or NAME:KEY (key 'token'); set as "
        "HF_TOKEN through a secretKeyRef."))] = None
    wandb_secret: Annotated[str | None, Field(description=(
        "Secret with a Weights & Biases key, as NAME or NAME:KEY (key 'api-key'); set as "
        "WANDB_API_KEY through a secretKeyRef."))] = None
    secret_env: Annotated[dict[str, str], Field(description=(
        "More environment variables from secrets: VAR -> SECRET:KEY."))] = field(
        default_factory=dict)
    image_pull_secrets: Annotated[tuple[str, ...], BeforeValidator(_comma_list), Field(
        description="Image pull secrets (comma-separated names).")] = ()
    node_selector: Annotated[dict[str, str], BeforeValidator(_key_values), Field(
        description="Node selector labels, e.g. gpu=a100,zone=b.")] = field(
        default_factory=dict)
    tolerations: Annotated[tuple[Toleration, ...], Field(description=(
        "Pod tolerations (YAML: key, operator, value, effect)."))] = ()
    priority_class: Annotated[str | None, Field(description=(
        "PriorityClass of the pods (PyTorchJob only)."))] = None
    scheduler_name: Annotated[str | None, Field(description=(
        "Pod scheduler, e.g. volcano (PyTorchJob only)."))] = None
    kueue_queue: Annotated[str | None, Field(description=(
        "Kueue LocalQueue: labels the job kueue.x-k8s.io/queue-name."))] = None
    volcano_queue: Annotated[str | None, Field(description=(
        "Volcano queue for gang scheduling (PyTorchJob only); pods use schedulerName "
        "volcano unless --scheduler-name says otherwise."))] = None
    elastic_min_nodes: Annotated[int | None, Field(ge=1, le=4096, description=(
        "Elastic PyTorchJob: fewest nodes to keep training on (with --elastic-max-nodes)."))] = (
        None)
    elastic_max_nodes: Annotated[int | None, Field(ge=1, le=4096, description=(
        "Elastic PyTorchJob: most nodes; --nodes pods start."))] = None
    max_restarts: Annotated[int | None, Field(ge=0, le=1000, description=(
        "Elastic PyTorchJob: restarts of the worker group before the job fails."))] = None

    @property
    def elastic(self) -> bool:
        return self.elastic_min_nodes is not None or self.elastic_max_nodes is not None


@dataclass(frozen=True, kw_only=True, slots=True)
class SlurmSpec:
    __pydantic_config__ = _STRICT

    partition: Annotated[str | None, Field(description="Slurm partition.")] = None
    time: Annotated[str, Field(description=(
        "Slurm time limit, e.g. 04:00:00 or 2-00:00:00."))] = "04:00:00"
    cpus_per_task: Annotated[int | None, Field(ge=1, le=1024, description=(
        "CPUs for each node's task. Defaults to 8 per GPU."))] = None
    account: Annotated[str | None, Field(description="Slurm account to charge.")] = None
    qos: Annotated[str | None, Field(description="Slurm quality of service.")] = None
    mem: Annotated[str | None, Field(description=(
        "Memory per node, e.g. 64G or 0 for all of it (sbatch --mem)."))] = None
    constraint: Annotated[str | None, Field(description=(
        "Node features required, e.g. a100&ib (sbatch --constraint)."))] = None
    exclusive: Annotated[bool, Field(description=(
        "Take whole nodes, shared with no other job."))] = False
    reservation: Annotated[str | None, Field(description="Slurm reservation to run in.")] = None
    container: Annotated[SlurmContainer, Field(description=(
        "Run the job in --image with pyxis (srun --container-image) or apptainer."))] = (
        SlurmContainer.NONE)
    container_mounts: Annotated[list[str], Field(description=(
        "Container bind mounts SRC:DST[:ro]; model, data and output must be visible inside."
    ))] = field(default_factory=list)
    signal_before_s: Annotated[int, Field(ge=10, le=86400, description=(
        "Seconds before the time limit at which Slurm sends USR2, so the trainer saves a "
        "checkpoint and the job is requeued."))] = 120
    sbatch_extra: Annotated[list[str], Field(description=(
        "More sbatch options, one per item, e.g. --mail-type=END."))] = field(
        default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class DistSpec:
    """How the processes talk to each other: NCCL preset, overrides, debugging, timeouts."""

    __pydantic_config__ = _STRICT

    fabric: Annotated[Fabric, Field(description=(
        "Interconnect preset for NCCL: auto (detected in the job at start), nvlink, pcie, "
        "infiniband, roce, ethernet or efa. See `mgft nccl explain`."))] = Fabric.AUTO
    nccl: Annotated[dict[str, str], Field(description=(
        "NCCL variables that override the preset (NCCL_*, TORCH_NCCL_*, FI_*)."))] = field(
        default_factory=dict)
    debug: Annotated[bool, Field(description=(
        "Debug distributed runs: NCCL INFO logs, TORCH_DISTRIBUTED_DEBUG=DETAIL, desync "
        "reports and a 120 s collective timeout."))] = False
    timeout: Annotated[int | None, Field(ge=30, le=86400, description=(
        "Seconds a collective may wait for a missing rank before the job fails "
        "(default 600, 120 with --debug-dist)."))] = None
    preflight: Annotated[bool, Field(description=(
        "Run mgft doctor's quick checks in every process before training starts."))] = False


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
    dist: Annotated[DistSpec, Field(description=(
        "NCCL preset, overrides, debugging and timeouts."))] = field(default_factory=DistSpec)
    plan: Annotated[PlanSpec, Field(description="How --strategy auto sizes the job.")] = field(
        default_factory=PlanSpec)
    generate: Annotated[GenerateSpec | None, Field(description=(
        "When set, the job generates completions for train.dataset instead of training."))] = (
        None)
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
