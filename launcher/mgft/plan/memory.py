"""Per-GPU memory of one training job under each strategy: one small function per strategy.

Bytes are split the way the memory is held: parameters, gradients, optimizer states,
activations and the loss (what grows with the micro-batch), buffers (communication buckets,
gathered parameters, dequantized weights) and the trainer's evaluation pass. `Breakdown.peak`
combines them the way they coexist over a run; docs/plan.md derives each term. Pure
arithmetic: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mgft.plan.activations import (
    Batch,
    eval_bytes,
    loss_working_set,
    recompute_layer,
    saved_bytes,
)
from mgft.plan.arch import Arch
from mgft.spec.job import JobSpec, Kernels, Precision, Strategy, Tuning
from mgft.spec.rules.lora_dropout import RECOMPUTED_UNDER

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
FP32 = 4
GIB = 2 ** 30
DEEPSPEED = (Strategy.ZERO1, Strategy.ZERO2, Strategy.ZERO3, Strategy.ZERO3_OFFLOAD)
# ZeRO-3 partitions lm_head's weight and gathers it only around lm_head's own forward, which
# the fused loss skips: the trainer keeps the logits path there (mgft_train.kernels).
NO_FUSED_LOSS = (Strategy.ZERO3, Strategy.ZERO3_OFFLOAD)
ALL = tuple(s for s in Strategy if s.value != "auto")
TERMS = ("params", "grads", "optimizer", "activations", "recompute", "loss", "buffers",
         "backward_buffers", "step_extra", "eval")


@dataclass(frozen=True, kw_only=True, slots=True)
class Assumptions:
    """How the trainer runs each strategy, where the estimate depends on it. Defaults are the
    trainer's and the libraries' own; docs/plan.md says where each comes from."""

    # bitsandbytes nf4 with double quantization: 4 bits, plus an 8-bit absmax per 64 weights,
    # plus an fp32 absmax per 256 of those.
    nf4_bytes: float = 0.5 + 1 / 64 + 4 / (64 * 256)
    # DeepSpeed's reduce_bucket_size default and the trainer's stage3_prefetch_bucket_size
    # (elements; mgft_train.parallel.zero). The reduce bucket is allocated whole, however few
    # elements there are to reduce.
    zero_bucket: int = 500_000_000
    zero3_prefetch: int = 200_000_000
    # Unpacked micro-batches of 2+ sequences are padded (variable-length data).
    padded: bool = True
    # Bytes of a dropout mask per element: CUDA's fused dropout keeps a bool.
    dropout_mask_bytes: int = 1
    # --kernels auto means Liger on CUDA when liger-kernel is installed; mgft's CUDA image
    # installs it.
    liger_installed: bool = True
    # torch's varlen_attn takes fewer k/v heads than q heads (enable_gqa); without it the
    # trainer repeats k and v to every head.
    varlen_gqa: bool = True
    # The trainer's reload check after training: no-grad forwards over this many samples
    # (mgft_train.evaluate.RELOAD_CHECK_ROWS), --micro-batch rows at a time, each padded to
    # its longest: eval_len tokens when the data's longest sample is known, else --seq-len.
    # A held-out eval (--eval-dataset, --eval-split) runs --micro-batch sequences of up to
    # --seq-len: within this bound while --micro-batch is 16 or less.
    eval_rows: int = 16
    eval_len: int | None = None
    # Outside PyTorch's allocator, so never in max_memory_allocated: the CUDA context, cuBLAS
    # workspaces and NCCL communicators. Counted only when checking what fits.
    cuda_overhead_gib: float = 1.5
    # The optimizer step's working memory under --precision (mgft_train.precision):
    # MasterAdamW's fp32 gradients for one chunk of elements (a larger weight alone), and
    # KahanAdamW's fp32 temporaries over one piece of a weight.
    master_chunk: int = 2**27
    kahan_piece: int = 2**25
    kahan_temporaries: int = 5
    # Host memory of each trainer process before any model state: torch, the CUDA context's
    # host side, NCCL and the trainer's libraries (mgft.plan.host; docs/plan.md, "Host
    # memory").
    process_host_gib: float = 2.0
    # zero3-offload's host memory beyond the state it offloads, per process: a share of that
    # state plus a fixed part. Measured, not yet attributed to a DeepSpeed buffer
    # (bench/host_memory.py, bench/results/host-memory-h100.json: DeepSpeed 0.19.8, torch
    # 2.11; fitted on llama-3.2-1b and -3b full, checked on qwen3-1.7b: within 0.5%).
    offload_extra_share: float = 0.17
    offload_extra_gib: float = 3.0


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
    lora_dropout_recompute: bool = False
    gpus_per_node: int = 1
    nodes: int = 1
    kernels: Kernels = Kernels.AUTO
    packing: bool = True
    precision: Precision = Precision.MIXED
    save: bool = True  # the final save gathers the model on rank 0's CPU (not --save none)
    save_merged: bool = False

    @classmethod
    def of_spec(cls, spec: JobSpec, arch: Arch) -> Job:
        """What the trainer will run, as `mgft plan` describes it: bf16 on GPUs, with the
        spec's kernels, packing, activation checkpointing and precision."""
        t = spec.train
        return cls(arch=arch, tuning=t.tuning, dtype="bf16", micro_batch=t.micro_batch,
                   seq_len=t.seq_len, grad_accum=t.grad_accum, lora_r=t.lora_r,
                   lora_dropout=t.lora_dropout, lora_dropout_recompute=t.lora_dropout_recompute,
                   gpus_per_node=spec.resources.gpus,
                   nodes=spec.resources.nodes, kernels=t.kernels, packing=t.packing,
                   checkpointing=t.activation_checkpointing, precision=t.precision)

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
    """Bytes on the busiest GPU under one strategy, split the way they are held."""

    strategy: Strategy
    params: float
    grads: float
    optimizer: float
    activations: float  # saved for the backward pass at the end of the forward pass
    buffers: float  # held all along: communication buckets, gathered weights, dequantized
    loss: float = 0.0  # the loss over the vocabulary (logits or the fused loss's gradients)
    recompute: float = 0.0  # one checkpointed layer re-run in the backward pass
    backward_buffers: float = 0.0  # only from the backward pass to the step (reduce buffers)
    step_extra: float = 0.0  # only at the end of the backward pass / in optimizer.step
    eval: float = 0.0  # the trainer's evaluation pass after training
    grads_in_forward: bool = False  # gradients already exist while activations build up
    grads_persist: bool = False  # a gradient buffer allocated at start-up (ZeRO-3)
    host: float = 0.0  # CPU memory per process (offload; mgft.plan.host adds the rest)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def terms(self) -> dict[str, float]:
        """Every term in bytes, by name (the JSON outputs and the accuracy benchmark)."""
        return {name: getattr(self, name) for name in TERMS}

    @property
    def static(self) -> float:
        return self.params + self.optimizer + self.buffers

    @property
    def moments(self) -> dict[str, float]:
        """The three high points of a run. End of the forward pass: the saved activations
        and the loss (or one recomputed layer: they never coexist). End of the backward pass:
        activations freed, every gradient held. The evaluation pass: no activations, no
        gradients (zero_grad frees them) except a buffer that persists."""
        forward = (self.static + self.activations + max(self.loss, self.recompute)
                   + self.backward_buffers + (self.grads if self.grads_in_forward else 0.0))
        step = self.static + self.grads + self.backward_buffers + self.step_extra
        evaluation = self.static + self.eval + (self.grads if self.grads_persist else 0.0)
        return {"forward": forward, "step": step, "eval": evaluation}

    @property
    def peak(self) -> float:
        """The largest moment. Gradients grow as activations shrink, so between the end of
        the forward pass and the end of the backward pass it is never higher."""
        return max(self.moments.values())

    @property
    def peak_moment(self) -> str:
        moments = self.moments
        return max(moments, key=moments.__getitem__)


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


@dataclass(frozen=True, kw_only=True, slots=True)
class ParamBytes:
    """Bytes per trained parameter as the trainer holds it under one strategy and
    --precision (mgft_train.precision), before sharding."""

    weights: int
    grads: int
    optimizer: int  # AdamW's exp_avg and exp_avg_sq
    master: int  # the fp32 master copy, or bf16-kahan's bf16 compensation

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.master


def param_bytes(job: Job, strategy: Strategy) -> ParamBytes:
    """mixed: peft keeps LoRA adapters fp32 on a 16-bit base, and FSDP loads fully trained
    weights in fp32 (the shards are the master copy, computed in bf16): fp32 throughout.
    DeepSpeed casts the whole module, adapters included, to 16 bits and keeps an fp32 master
    copy in its optimizer; ddp and mp load 16-bit weights and MasterAdamW keeps the fp32
    copy. bf16-kahan: 16-bit weights and exp_avg, an fp32 exp_avg_sq, a 16-bit
    compensation. bf16: everything in 16 bits. fp32 weights are their own master."""
    w = job.act_bytes
    if w == FP32:
        return ParamBytes(weights=FP32, grads=FP32, optimizer=2 * FP32, master=0)
    if job.precision is Precision.BF16:
        return ParamBytes(weights=w, grads=w, optimizer=2 * w, master=0)
    if job.precision is Precision.BF16_KAHAN:
        return ParamBytes(weights=w, grads=w, optimizer=w + FP32, master=w)
    if strategy not in DEEPSPEED and (job.tuning is not Tuning.FULL or
                                      strategy is Strategy.FSDP):
        return ParamBytes(weights=FP32, grads=FP32, optimizer=2 * FP32, master=0)
    return ParamBytes(weights=w, grads=w, optimizer=2 * FP32, master=FP32)


def trainable_bytes(job: Job, strategy: Strategy) -> int:
    """Bytes per trainable parameter as stored."""
    return param_bytes(job, strategy).weights


def step_bytes(job: Job, strategy: Strategy, a: Assumptions, share: int = 1) -> float:
    """What the optimizer step allocates beyond its states, on the busiest GPU: MasterAdamW's
    fp32 gradients for one chunk (ddp and mp), KahanAdamW's fp32 temporaries for one piece
    of the `share` of the weights this GPU steps."""
    pb = param_bytes(job, strategy)
    local = job.trainable / share
    if pb.master == FP32 and strategy in (Strategy.DDP, Strategy.MP):
        largest = job.arch.hidden * max(job.arch.vocab, job.arch.intermediate)
        return FP32 * min(local, max(a.master_chunk, largest))
    if job.precision is Precision.BF16_KAHAN and pb.master:
        return a.kahan_temporaries * FP32 * min(local, a.kahan_piece)
    return 0.0


def compute_bytes(job: Job, strategy: Strategy) -> int:
    """Bytes per trainable parameter as the forward pass sees it: FSDP's mixed precision
    gathers every weight in the compute dtype, LoRA adapters included."""
    return job.act_bytes if strategy is Strategy.FSDP else trainable_bytes(job, strategy)


def layer_bytes(job: Job, a: Assumptions, strategy: Strategy) -> float:
    """One decoder layer's parameters, unsharded, as the forward pass sees them."""
    arch, w = job.arch, job.act_bytes
    if job.tuning is Tuning.FULL:
        return float(compute_bytes(job, strategy) * arch.layer_params)
    base = (a.nf4_bytes if job.tuning is Tuning.QLORA else w) * arch.layer_linear_params
    base += w * (arch.layer_params - arch.layer_linear_params)
    return base + compute_bytes(job, strategy) * job.trainable / arch.layers


def liger(job: Job, a: Assumptions) -> bool:
    """Whether the trainer patches in Liger's kernels: --kernels liger, or auto (and fp8,
    which is auto's kernels plus FP8 base weights) with liger-kernel installed (GPU runs;
    the plan sizes GPUs). FP8's base weights take what bf16's did (W and W.T, a byte
    each), so the plan's weight bytes stand."""
    return job.kernels is Kernels.LIGER or (job.kernels in (Kernels.AUTO, Kernels.FP8)
                                            and a.liger_installed)


def batch(job: Job, strategy: Strategy, a: Assumptions) -> Batch:
    on = liger(job, a)
    return Batch(arch=job.arch, micro_batch=job.micro_batch, seq_len=job.seq_len,
                 act_bytes=job.act_bytes, full=job.tuning is Tuning.FULL,
                 # Adapters compute in bf16 everywhere: autocast (DDP, mp), mixed precision
                 # (FSDP), the bf16 engine (DeepSpeed); mgft_train.parallel.engine.
                 lora_rank=job.lora_r, lora_bytes=job.act_bytes,
                 # --lora-dropout-recompute under whole-weight strategies: no copies
                 lora_dropout=job.lora_dropout > 0 and not (
                     job.lora_dropout_recompute and strategy in RECOMPUTED_UNDER),
                 dropout_mask_bytes=a.dropout_mask_bytes,
                 padded=a.padded and not job.packing, packed=job.packing,
                 # varlen attention: packing with any --kernels but none (mgft_train.model)
                 varlen=job.packing and job.kernels is not Kernels.NONE,
                 varlen_gqa=a.varlen_gqa, liger=on,
                 fused_loss=on and strategy not in NO_FUSED_LOSS,
                 checkpointing=job.checkpointing)


def _terms(job: Job, strategy: Strategy, a: Assumptions, share: int = 1) -> dict[str, float]:
    """The batch-dependent fields of a Breakdown; `share`: saved activations split over that
    many GPUs (mp)."""
    x = batch(job, strategy, a)
    return {"activations": saved_bytes(x) / share, "loss": loss_working_set(x),
            "recompute": recompute_layer(x),
            "eval": eval_bytes(job.arch, min(a.eval_rows, job.micro_batch),
                               min(a.eval_len or job.seq_len, job.seq_len), job.act_bytes)}


def dequant_buffer(job: Job) -> float:
    """QLoRA dequantizes one Linear weight at a time to the compute dtype for its matmul."""
    if job.tuning is not Tuning.QLORA:
        return 0.0
    return job.act_bytes * max(n_in * n_out for _, n_in, n_out in job.arch.linears())


def ddp(job: Job, a: Assumptions) -> Breakdown:
    """A full replica per GPU. The DDP reducer keeps its own flat copy of every gradient
    (gradient_as_bucket_view=False, the default) besides param.grad."""
    pb, n = param_bytes(job, Strategy.DDP), job.trainable
    buckets = pb.grads * n if job.world > 1 else 0.0
    return Breakdown(strategy=Strategy.DDP, params=frozen_bytes(job, a) + pb.weights * n,
                     grads=pb.grads * n, optimizer=(pb.optimizer + pb.master) * n,
                     buffers=buckets + dequant_buffer(job),
                     step_extra=step_bytes(job, Strategy.DDP, a), **_terms(job, Strategy.DDP, a))


def fsdp(job: Job, a: Assumptions) -> Breakdown:
    """FSDP2 with one unit per decoder layer and the root holding embeddings and lm_head.
    Trainable weights are fp32 shards (the master copy), gathered in bf16 for compute and
    their gradients reduce-scattered in fp32. The root stays gathered from forward to
    backward (FSDP2 does not reshard the root after forward), two layers are gathered at a
    time (prefetch), each in a buffer of its own beside the shard."""
    n, arch, w = job.world, job.arch, job.act_bytes
    pb = param_bytes(job, Strategy.FSDP)
    t = pb.weights * job.trainable
    root_params = arch.embed_params + arch.head_params
    root = w * root_params
    gathered = 2 * layer_bytes(job, a, Strategy.FSDP)
    # A unit's unsharded gradients (compute dtype) and their fp32 copy for the reduce-scatter:
    # one layer's during the backward pass, the root's (embeddings and head, when they train)
    # at its end.
    full = job.tuning is Tuning.FULL
    layer_reduce = (w + FP32) * (arch.layer_params if full else job.trainable / arch.layers)
    root_reduce = (w + FP32) * root_params if full else 0.0
    return Breakdown(strategy=Strategy.FSDP, params=(frozen_bytes(job, a) + t) / n,
                     grads=pb.grads * job.trainable / n,
                     optimizer=(pb.optimizer + pb.master) * job.trainable / n,
                     buffers=root + gathered + dequant_buffer(job), backward_buffers=layer_reduce,
                     step_extra=max(root_reduce, step_bytes(job, Strategy.FSDP, a, share=n)),
                     **_terms(job, Strategy.FSDP, a))


def _zero_common(job: Job) -> tuple[float, float, float]:
    """(16-bit trainable bytes, fp32 master + Adam bytes per rank, fp32 grad copy at step)."""
    n, pb = job.world, param_bytes(job, Strategy.ZERO2)  # DeepSpeed keeps fp32 masters
    return (pb.weights * job.trainable, (pb.optimizer + pb.master) * job.trainable / n,
            FP32 * job.trainable / n)


def zero1(job: Job, a: Assumptions) -> Breakdown:
    """DeepSpeed ZeRO-1: optimizer states sharded; full 16-bit gradients kept until the step.
    The reduce bucket (reduce_bucket_size elements, whatever the model) is allocated when the
    backward pass starts."""
    t16, opt, step = _zero_common(job)
    return Breakdown(strategy=Strategy.ZERO1, params=frozen_bytes(job, a) + t16, grads=t16,
                     optimizer=opt, buffers=dequant_buffer(job),
                     backward_buffers=job.act_bytes * a.zero_bucket, step_extra=step,
                     **_terms(job, Strategy.ZERO1, a))


def zero2(job: Job, a: Assumptions) -> Breakdown:
    """DeepSpeed ZeRO-2: gradients are reduced in buckets during backward and only this
    rank's partition is kept (contiguous_gradients: one bucket-sized buffer)."""
    t16, opt, step = _zero_common(job)
    return Breakdown(strategy=Strategy.ZERO2, params=frozen_bytes(job, a) + t16,
                     grads=t16 / job.world, optimizer=opt, buffers=dequant_buffer(job),
                     backward_buffers=job.act_bytes * a.zero_bucket, step_extra=step,
                     **_terms(job, Strategy.ZERO2, a))


def _gathered(job: Job, a: Assumptions) -> float:
    """ZeRO-3 gathers one module's parameters at a time: the embedding, lm_head, or a whole
    transformer block (the trainer makes blocks DeepSpeed leaf modules), plus what the
    prefetcher fetches ahead."""
    arch = job.arch
    largest = max(arch.vocab * arch.hidden, arch.layer_linear_params)
    return job.act_bytes * (largest + min(a.zero3_prefetch, arch.params))


def zero3(job: Job, a: Assumptions) -> Breakdown:
    """DeepSpeed ZeRO-3: parameters, gradients and optimizer states all sharded. The
    gradient partition is one flat buffer and the reduce bucket another, both allocated at
    start-up, so both are always there."""
    n = job.world
    t16, opt, step = _zero_common(job)
    bucket = job.act_bytes * a.zero_bucket
    return Breakdown(strategy=Strategy.ZERO3, params=(frozen_bytes(job, a) + t16) / n,
                     grads=t16 / n, grads_in_forward=True, grads_persist=True, optimizer=opt,
                     buffers=bucket + _gathered(job, a) + dequant_buffer(job), step_extra=step,
                     **_terms(job, Strategy.ZERO3, a))


def zero3_offload(job: Job, a: Assumptions) -> Breakdown:
    """ZeRO-3 with parameters and optimizer offloaded to CPU: the GPU holds activations and
    what is gathered or being reduced; the host holds the rest (reported as `host`)."""
    bucket = job.act_bytes * a.zero_bucket
    return Breakdown(strategy=Strategy.ZERO3_OFFLOAD, params=0.0, grads=0.0, optimizer=0.0,
                     buffers=bucket + _gathered(job, a) + dequant_buffer(job),
                     host=offload_host(job, a)[0], **_terms(job, Strategy.ZERO3_OFFLOAD, a))


def offload_host(job: Job, a: Assumptions) -> tuple[float, float]:
    """(all, page-locked) bytes zero3-offload keeps on the CPU per process: the 16-bit
    partitions of every weight (offload_param, pinned), the fp32 master partition and
    AdamW's two fp32 states (DeepSpeedCPUAdam; not pinned), the 16-bit gradient partition
    (DeepSpeed's grad_accum_dtype is the model's) and the fp32 gradients the CPU optimizer
    steps from (both pinned: offload_optimizer.pin_memory)."""
    n = job.world
    t16, opt, _ = _zero_common(job)
    weights16 = (frozen_bytes(job, a) + t16) / n
    grads16, grads32 = t16 / n, FP32 * job.trainable / n
    return weights16 + opt + grads16 + grads32, weights16 + grads16 + grads32


def mp(job: Job, a: Assumptions) -> Breakdown:
    """One process per node splits the layers evenly across its GPUs (device_map); the
    busiest GPU also computes the loss over the vocabulary. Nodes replicate with DDP."""
    g, pb, n = job.gpus_per_node, param_bytes(job, Strategy.MP), job.trainable
    buckets = pb.grads * n / g if job.nodes > 1 else 0.0
    return Breakdown(strategy=Strategy.MP, params=(frozen_bytes(job, a) + pb.weights * n) / g,
                     grads=pb.grads * n / g, optimizer=(pb.optimizer + pb.master) * n / g,
                     buffers=buckets + dequant_buffer(job),
                     step_extra=step_bytes(job, Strategy.MP, a, share=g),
                     **_terms(job, Strategy.MP, a, share=g))


ESTIMATORS = {Strategy.DDP: ddp, Strategy.FSDP: fsdp, Strategy.ZERO1: zero1,
              Strategy.ZERO2: zero2, Strategy.ZERO3: zero3, Strategy.ZERO3_OFFLOAD: zero3_offload,
              Strategy.MP: mp}


def estimate(job: Job, strategy: Strategy, a: Assumptions | None = None) -> Breakdown:
    if not job.precision.runs_under(strategy):
        raise ValueError(f"--precision {job.precision.value} does not run under "
                         f"--strategy {strategy.value}")
    a = a or Assumptions()
    out = ESTIMATORS[strategy](job, a)
    if job.grad_accum > 1 and not out.grads_in_forward:
        # Later micro-batches run their forward pass with the earlier ones' gradients held.
        out = replace(out, grads_in_forward=True)
    return out
