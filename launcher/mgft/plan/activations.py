"""Activation memory of one training micro-batch through a Llama-style decoder (transformers
LlamaForCausalLM, peft LoRA), counted tensor by tensor; and what the loss and the trainer's
evaluation pass hold over the vocabulary.

Each term is a tensor that autograd saves in the forward pass and frees in the backward pass;
docs/plan.md lists where each comes from. A test measures the saved tensors of real models on
CPU and checks these counts byte for byte (transformers' own kernels); Liger's kernels and
flash varlen attention run only on GPUs, so their terms are counted from their sources.

Notation: a = activation dtype bytes, h hidden, i intermediate, q = heads x head_dim,
kv = kv_heads x head_dim, r LoRA rank, lb = LoRA weight dtype bytes, T = b x s tokens,
V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mgft.plan.arch import Arch

MASK_ALIGN = 16  # the memory-efficient SDPA kernel pads the bias's last dimension to this
FP32 = 4
TOKEN_ID = 8  # int64
QKV = ("q_proj", "k_proj", "v_proj")


@dataclass(frozen=True, kw_only=True, slots=True)
class Batch:
    """One micro-batch through the model, and what decides which tensors autograd keeps."""

    arch: Arch
    micro_batch: int
    seq_len: int
    act_bytes: int = 2  # bf16 activations
    full: bool = False  # every weight trains (else: frozen base + LoRA adapters)
    lora_rank: int = 16
    lora_bytes: int = 4  # the adapters' compute dtype: the activations' (2 on GPUs)
    lora_dropout: bool = True
    # CUDA's fused dropout keeps a 1-byte bool mask; CPU keeps a mask in the input's dtype.
    dropout_mask_bytes: int = 1
    # Unpacked data: a micro-batch of 2+ sequences has padding, so transformers passes a
    # mask, SDPA uses the memory-efficient kernel and GQA's k/v are repeated to all heads.
    padded: bool = True
    # Packed data: each row is several samples, told apart by restarting position_ids. Under
    # SDPA transformers builds a block-diagonal mask from them (as for padding).
    packed: bool = False
    # A packed micro-batch flattened into one row and run through flash varlen attention:
    # no mask at all. `varlen_gqa`: the kernel takes fewer k/v heads than q heads (torch's
    # enable_gqa); without it k and v are repeated to every head first.
    varlen: bool = False
    varlen_gqa: bool = True
    liger: bool = False  # Liger's RMSNorm, SwiGLU and RoPE kernels
    fused_loss: bool = False  # Liger's fused linear cross-entropy: the logits never exist
    checkpointing: bool = False

    @property
    def tokens(self) -> int:
        return self.micro_batch * self.seq_len

    @property
    def has_mask(self) -> bool:
        return not self.varlen and (self.packed or (self.padded and self.micro_batch > 1))


def _rms_norm(x: Batch, weight_trains: bool) -> float:
    """Per token. transformers' RMSNorm: the fp32 upcast (saved by pow and mul), rsqrt's
    (T, 1) fp32 result, and, when the weight trains, the normalized tensor its gradient
    needs. Liger's: its input and the fp32 rstd, whether the weight trains or not."""
    h, a = x.arch.hidden, x.act_bytes
    if x.liger:
        return a * h + FP32
    return FP32 * h + FP32 + (a * h if weight_trains else 0)


def _repeats_kv(x: Batch) -> bool:
    """Whether k and v are copied to every q head before attention. transformers' repeat_kv
    runs when a mask rules out SDPA's native GQA, and copies unless there is one kv head
    (then the reshape of the expanded tensor is a view); the varlen path repeats (always a
    copy) only when its kernel lacks GQA."""
    arch = x.arch
    if x.varlen:
        return not x.varlen_gqa and arch.kv_heads < arch.heads
    return x.has_mask and 1 < arch.kv_heads < arch.heads


def _attention(x: Batch) -> float:
    """Per token, what attention saves: q, k, v (copied to every head when repeated), the
    output (also o_proj's input) and the fp32 logsumexp; with a mask, the additive bias SDPA
    converts the boolean mask into, in every layer."""
    arch, a = x.arch, x.act_bytes
    kv = arch.q_dim if _repeats_kv(x) else arch.kv_dim
    per_token = a * (2 * arch.q_dim + 2 * kv) + FP32 * arch.heads
    if x.has_mask:
        per_token += a * math.ceil(x.seq_len / MASK_ALIGN) * MASK_ALIGN
    return per_token


def _mlp(x: Batch) -> float:
    """Per token, the SwiGLU product's saved inputs: transformers keeps SiLU's input and both
    factors of the product (3ai); Liger's fused SiLU-mul keeps the gate and up outputs (2ai)."""
    return (2 if x.liger else 3) * x.act_bytes * x.arch.intermediate


def _adapter(x: Batch, n_in: int, input_needs_grad: bool) -> float:
    """Per token, one peft LoRA Linear on a frozen base: the input cast to the adapter's dtype
    and passed through dropout (saved by lora_A), dropout's mask (only when the input itself
    needs a gradient), and lora_A's r-wide output (saved by lora_B)."""
    mask = x.dropout_mask_bytes * n_in if x.lora_dropout and input_needs_grad else 0
    return x.lora_bytes * n_in + mask + x.lora_bytes * x.lora_rank


def _shared_adapter_inputs(x: Batch) -> bool:
    """With no dropout and adapters in the activation dtype, nothing copies the input: the
    adapters of q/k/v (and gate/up) all save the same tensor."""
    return not x.lora_dropout and x.lora_bytes == x.act_bytes


def layer_per_token(x: Batch, first: bool = False) -> float:
    """Bytes one decoder layer saves per token. In a LoRA model the first layer's input (the
    frozen embedding's output) needs no gradient, so its input norm and the dropout masks on
    q/k/v keep nothing."""
    arch, a = x.arch, x.act_bytes
    h, i = arch.hidden, arch.intermediate
    attn, mlp = _attention(x), _mlp(x)
    if x.full:
        norms = 2 * _rms_norm(x, weight_trains=True)
        # q/k/v share one input (the norm's output), gate/up another; down_proj keeps the
        # SwiGLU product.
        return norms + a * h + attn + a * h + mlp + a * i
    norms = (1 if first else 2) * _rms_norm(x, weight_trains=False)
    if _shared_adapter_inputs(x):
        adapters = a * h + a * h + a * i + 7 * a * x.lora_rank  # o_proj's input is attention's
    else:
        adapters = sum(_adapter(x, n_in, input_needs_grad=not (first and name in QKV))
                       for name, n_in, _ in arch.linears())
    return norms + attn + mlp + adapters


def _head_per_token(x: Batch) -> float:
    """The final norm, and when the head trains: lm_head's input (the fused loss computes its
    gradients in the forward pass and keeps no input) and the token ids the embedding's
    gradient needs."""
    norm = _rms_norm(x, weight_trains=x.full)
    if not x.full:
        return norm
    return norm + (0 if x.fused_loss else x.act_bytes * x.arch.hidden) + TOKEN_ID


def rope_bytes(x: Batch) -> float:
    """cos and sin, computed once and shared by every layer: one row of seq_len positions for
    unpacked batches (position_ids default to 0..s-1), one per token for packed ones."""
    positions = x.tokens if x.packed or x.varlen else x.seq_len
    return 2 * positions * x.arch.head_dim * x.act_bytes


def saved_bytes(x: Batch) -> float:
    """Everything autograd holds at the end of the forward pass, for the whole model."""
    arch, a, t = x.arch, x.act_bytes, x.tokens
    head = _head_per_token(x) * t
    if x.checkpointing:
        # Each checkpointed layer keeps only its input; the boolean mask is kept once.
        mask = x.micro_batch * x.seq_len ** 2 if x.has_mask else 0
        return arch.layers * a * arch.hidden * t + head + rope_bytes(x) + mask
    layers = layer_per_token(x, first=not x.full) + (arch.layers - 1) * layer_per_token(x)
    return layers * t + head + rope_bytes(x)


def fused_chunk(x: Batch) -> int:
    """Rows of the logits Liger's fused loss materializes at a time (its own rule: the tokens
    split into about V/h chunks, rounded up to a power of two)."""
    t, arch = x.tokens, x.arch
    rows = math.ceil(t / math.ceil(arch.vocab / arch.hidden))
    return min(1 << max(rows - 1, 0).bit_length(), t)


def loss_working_set(x: Batch) -> float:
    """The loss over the vocabulary at the start of the backward pass.

    Logits path (transformers' ForCausalLMLoss: bf16 logits, .float(), cross-entropy over
    all T positions, the labels shifted by padding): log_softmax's fp32 output (saved), the
    fp32 gradient flowing into it and the fp32 gradient it returns, 12·T·V.
    Fused path (Liger): the gradient of the hidden states (a·h per token) and the fp32 loss
    per token, computed in the forward pass and kept for backward; one chunk of bf16 logits
    while it runs; and, when the head trains, lm_head's whole gradient (V·h in the weight's
    16-bit dtype), also made in the forward pass.
    """
    arch, a, t = x.arch, x.act_bytes, x.tokens
    if not x.fused_loss:
        return 3 * FP32 * t * arch.vocab
    head_grad = a * arch.vocab * arch.hidden if x.full else 0
    return a * arch.hidden * t + FP32 * t + a * fused_chunk(x) * arch.vocab + head_grad


def recompute_layer(x: Batch) -> float:
    """With checkpointing, the backward pass re-runs one layer and holds its activations."""
    return layer_per_token(x) * x.tokens if x.checkpointing else 0.0


def activation_bytes(x: Batch) -> float:
    """Peak batch-dependent memory of a training step: the saved tensors plus the larger of
    the loss working set and (with checkpointing) one recomputed layer; the two never
    coexist."""
    return saved_bytes(x) + max(loss_working_set(x), recompute_layer(x))


def eval_bytes(arch: Arch, rows: int, seq_len: int, act_bytes: int = 2) -> float:
    """The trainer's evaluation pass after training (mgft_train.evaluate): one no-grad forward
    over `rows` padded samples, the model in eval mode, so even Liger's model computes the
    logits. Its peak is inside the loss: the bf16 logits, their fp32 copy and log_softmax's
    fp32 output, (a + 8)·rows·s·V, next to the final hidden states (a·h per token); nothing
    else of the pass is kept (no grad)."""
    tokens = rows * seq_len
    return (act_bytes + 2 * FP32) * tokens * arch.vocab + act_bytes * tokens * arch.hidden
