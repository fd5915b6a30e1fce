"""Per-GPU memory of one training job under each strategy: one small function per strategy.

Bytes are split the way the memory is held: parameters, gradients, optimizer states,
activations (everything that grows with the micro-batch) and buffers (communication buckets,
gathered parameters, dequantized weights). `Breakdown.peak` combines them the way they
coexist over a step; docs/plan.md derives each term. Pure arithmetic: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mgft.plan.activations import Batch, activation_bytes, loss_working_set, saved_bytes
from mgft.plan.arch import Arch
from mgft.spec import Strategy, Tuning

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
FP32 = 4
GIB = 2 ** 30
DEEPSPEED = (Strategy.ZERO1, Strategy.ZERO2, Strategy.ZERO3, Strategy.ZERO3_OFFLOAD)
ALL = tuple(s for s in Strategy if s.value != "auto")


@dataclass(frozen=True, kw_only=True, slots=True)
class Assumptions:
    """How the trainer runs each strategy, where the estimate depends on it. Defaults are the
    libraries' own defaults; docs/plan.md says where each comes from."""

    # bitsandbytes nf4 with double quantization: 4 bits, plus an 8-bit absmax per 64 weights,
    # plus an fp32 absmax per 256 of those.
    nf4_bytes: float = 0.5 + 1 / 64 + 4 / (64 * 256)
    # DeepSpeed reduce_bucket_size and stage3_prefetch_bucket_size defaults (elements).
    zero_bucket: int = 500_000_000
    zero3_prefetch: int = 50_000_000
    # Micro-batches of 2+ sequences are padded (variable-length data).
    padded: bool = True
    # Bytes of a dropout mask per element: CUDA's fused dropout keeps a bool.
    dropout_mask_bytes: int = 1
    # Outside PyTorch's allocator, so never in max_memory_allocated: the CUDA context, cuBLAS
    # workspaces and NCCL communicators. Counted only when checking what fits.
    cuda_overhead_gib: float = 1.5


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """What is planned: the model, how it is tuned, the batch and the GPUs."""

    arch: Arch
    tuning: Tuning = Tuning.LORA
    dtype: str = "bf16"
    micro_batch: int = 4
    seq_len: int = 1024
    grad_accum: int = 1
    checkpointing: bool = False
    lora_r: int = 16
    lora_dropout: float = 0.05
    gpus_per_node: int = 1
    nodes: int = 1

    @property
    def world(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def trainable(self) -> int:
        if self.tuning is Tuning.FULL:
            return self.arch.params
        return self.arch.lora_params(self.lora_r)

    @property
    def act_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]


@dataclass(frozen=True, kw_only=True, slots=True)
class Breakdown:
    """Bytes on the busiest GPU under one strategy."""

    strategy: Strategy
    params: float
    grads: float
    optimizer: float
    activations: float
    buffers: float
    grads_in_forward: bool = False  # gradients already exist while activations build up
    step_extra: float = 0.0  # only during optimizer.step (e.g. fp32 copies of the gradients)
    host: float = 0.0  # CPU memory per process (offload)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def peak(self) -> float:
        """The larger of the two moments of a step: the end of the forward pass (activations
        held) and the end of the backward pass (activations freed, all gradients held).
        Gradients grow as activations shrink, so in between it is never higher."""
        static = self.params + self.optimizer + self.buffers
        forward = static + self.activations + (self.grads if self.grads_in_forward else 0.0)
        step = static + self.grads + self.step_extra
        return max(forward, step)


def frozen_bytes(job: Job, a: Assumptions) -> float:
    """The base weights that do not train (LoRA/QLoRA) in their storage format."""
    arch, w = job.arch, job.act_bytes
    if job.tuning is Tuning.FULL:
        return 0.0
    if job.tuning is Tuning.QLORA:
        # bitsandbytes quantizes the decoder's Linear weights; embeddings, lm_head, norms and
        # biases stay in the compute dtype.
        return a.nf4_bytes * arch.linear_params + w * (arch.params - arch.linear_params)
    return float(w * arch.params)


def layer_bytes(job: Job, a: Assumptions, strategy: Strategy) -> float:
    """One decoder layer's parameters, unsharded, as stored."""
    arch, w = job.arch, job.act_bytes
    if job.tuning is Tuning.FULL:
        return float(w * arch.layer_params)
    base = (a.nf4_bytes if job.tuning is Tuning.QLORA else w) * arch.layer_linear_params
    base += w * (arch.layer_params - arch.layer_linear_params)
    return base + trainable_bytes(job, strategy) * job.trainable / arch.layers


def trainable_bytes(job: Job, strategy: Strategy) -> int:
    """Bytes per trainable parameter as stored: peft keeps LoRA adapters in fp32 on a 16-bit
    base; DeepSpeed casts the whole module, adapters included, to the 16-bit dtype."""
    if job.tuning is Tuning.FULL or strategy in DEEPSPEED:
        return job.act_bytes
    return FP32


def batch(job: Job, strategy: Strategy, a: Assumptions) -> Batch:
    return Batch(arch=job.arch, micro_batch=job.micro_batch, seq_len=job.seq_len,
                 act_bytes=job.act_bytes, full=job.tuning is Tuning.FULL,
                 lora_rank=job.lora_r, lora_bytes=trainable_bytes(job, strategy),
                 lora_dropout=job.lora_dropout > 0, dropout_mask_bytes=a.dropout_mask_bytes,
                 padded=a.padded, checkpointing=job.checkpointing)


def dequant_buffer(job: Job) -> float:
    """QLoRA dequantizes one Linear weight at a time to the compute dtype for its matmul."""
    if job.tuning is not Tuning.QLORA:
        return 0.0
    return job.act_bytes * max(n_in * n_out for _, n_in, n_out in job.arch.linears())


def ddp(job: Job, a: Assumptions) -> Breakdown:
    """A full replica per GPU. The DDP reducer keeps its own flat copy of every gradient
    (gradient_as_bucket_view=False, the default) besides param.grad."""
    t = trainable_bytes(job, Strategy.DDP) * job.trainable
    buckets = t if job.world > 1 else 0.0
    return Breakdown(strategy=Strategy.DDP, params=frozen_bytes(job, a) + t, grads=t,
                     optimizer=2 * t,  # AdamW: exp_avg and exp_avg_sq in the parameter dtype
                     activations=activation_bytes(batch(job, Strategy.DDP, a)),
                     buffers=buckets + dequant_buffer(job))


def fsdp(job: Job, a: Assumptions) -> Breakdown:
    """FSDP2 with one unit per decoder layer and the root holding embeddings and lm_head.
    Everything is sharded; the root stays gathered from forward to backward (FSDP2 does not
    reshard the root after forward), and two layers are gathered at a time (prefetch)."""
    n, arch, w = job.world, job.arch, job.act_bytes
    t = trainable_bytes(job, Strategy.FSDP) * job.trainable
    root = w * (arch.embed_params + arch.head_params) * (1 - 1 / n)
    gathered = 2 * layer_bytes(job, a, Strategy.FSDP) * (1 - 1 / n)
    layer_grads = t / arch.layers  # a layer's unsharded gradients before the reduce-scatter
    return Breakdown(strategy=Strategy.FSDP, params=(frozen_bytes(job, a) + t) / n, grads=t / n,
                     optimizer=2 * t / n,
                     activations=activation_bytes(batch(job, Strategy.FSDP, a)),
                     buffers=root + gathered + layer_grads + dequant_buffer(job))


def _zero_common(job: Job) -> tuple[float, float, float]:
    """(16-bit trainable bytes, fp32 master + Adam bytes per rank, fp32 grad copy at step)."""
    n = job.world
    t16 = job.act_bytes * job.trainable
    master = 0 if job.act_bytes == FP32 else FP32  # DeepSpeed keeps fp32 master weights
    return t16, (master + 2 * FP32) * job.trainable / n, FP32 * job.trainable / n


def zero1(job: Job, a: Assumptions) -> Breakdown:
    """DeepSpeed ZeRO-1: optimizer states sharded; full 16-bit gradients kept until the step."""
    t16, opt, step = _zero_common(job)
    bucket = job.act_bytes * min(a.zero_bucket, job.trainable)
    return Breakdown(strategy=Strategy.ZERO1, params=frozen_bytes(job, a) + t16, grads=t16,
                     optimizer=opt, activations=activation_bytes(batch(job, Strategy.ZERO1, a)),
                     buffers=bucket + dequant_buffer(job), step_extra=step)


def zero2(job: Job, a: Assumptions) -> Breakdown:
    """DeepSpeed ZeRO-2: gradients are reduced in buckets during backward and only this
    rank's partition is kept (contiguous_gradients: a bucket-sized buffer)."""
    t16, opt, step = _zero_common(job)
    bucket = job.act_bytes * min(a.zero_bucket, job.trainable)
    return Breakdown(strategy=Strategy.ZERO2, params=frozen_bytes(job, a) + t16,
                     grads=t16 / job.world, optimizer=opt,
                     activations=activation_bytes(batch(job, Strategy.ZERO2, a)),
                     buffers=bucket + dequant_buffer(job), step_extra=step)


def _gathered(job: Job, a: Assumptions) -> float:
    """ZeRO-3 gathers one module's parameters at a time (the largest is the embedding or
    lm_head), plus what the prefetcher fetches ahead."""
    arch = job.arch
    largest = max(arch.vocab * arch.hidden, max(i * o for _, i, o in arch.linears()))
    return job.act_bytes * (largest + min(a.zero3_prefetch, arch.params))


def zero3(job: Job, a: Assumptions) -> Breakdown:
    """DeepSpeed ZeRO-3: parameters, gradients and optimizer states all sharded. The
    gradient partition is one flat buffer allocated at start-up, so it is always there."""
    n = job.world
    t16, opt, step = _zero_common(job)
    bucket = job.act_bytes * min(a.zero_bucket, job.trainable)
    return Breakdown(strategy=Strategy.ZERO3, params=(frozen_bytes(job, a) + t16) / n,
                     grads=t16 / n, grads_in_forward=True, optimizer=opt,
                     activations=activation_bytes(batch(job, Strategy.ZERO3, a)),
                     buffers=bucket + _gathered(job, a) + dequant_buffer(job), step_extra=step)


def zero3_offload(job: Job, a: Assumptions) -> Breakdown:
    """ZeRO-3 with parameters and optimizer offloaded to CPU: the GPU holds activations and
    what is gathered or being reduced; the host holds the rest (reported as `host`)."""
    n = job.world
    t16, opt, _ = _zero_common(job)
    bucket = job.act_bytes * min(a.zero_bucket, job.trainable)
    host = (frozen_bytes(job, a) + t16) / n + opt + t16 / n
    return Breakdown(strategy=Strategy.ZERO3_OFFLOAD, params=0.0, grads=0.0, optimizer=0.0,
                     activations=activation_bytes(batch(job, Strategy.ZERO3_OFFLOAD, a)),
                     buffers=bucket + _gathered(job, a) + dequant_buffer(job), host=host)


def mp(job: Job, a: Assumptions) -> Breakdown:
    """One process per node splits the layers evenly across its GPUs (device_map); the
    busiest GPU also computes the loss over the vocabulary. Nodes replicate with DDP."""
    g = job.gpus_per_node
    t = trainable_bytes(job, Strategy.MP) * job.trainable
    x = batch(job, Strategy.MP, a)
    buckets = t / g if job.nodes > 1 else 0.0
    return Breakdown(strategy=Strategy.MP, params=(frozen_bytes(job, a) + t) / g, grads=t / g,
                     optimizer=2 * t / g, activations=saved_bytes(x) / g + loss_working_set(x),
                     buffers=buckets + dequant_buffer(job))


ESTIMATORS = {Strategy.DDP: ddp, Strategy.FSDP: fsdp, Strategy.ZERO1: zero1,
              Strategy.ZERO2: zero2, Strategy.ZERO3: zero3, Strategy.ZERO3_OFFLOAD: zero3_offload,
              Strategy.MP: mp}


def estimate(job: Job, strategy: Strategy, a: Assumptions | None = None) -> Breakdown:
    a = a or Assumptions()
    out = ESTIMATORS[strategy](job, a)
    if job.grad_accum > 1 and not out.grads_in_forward:
        # Later micro-batches run their forward pass with the earlier ones' gradients held.
        out = replace(out, grads_in_forward=True)
    return out
