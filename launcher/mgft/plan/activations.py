"""Activation memory of one training micro-batch through a Llama-style decoder (transformers
LlamaForCausalLM with SDPA attention, peft LoRA), counted tensor by tensor.

Each term is a tensor that autograd saves in the forward pass and frees in the backward pass;
docs/plan.md lists where each comes from. A test measures the saved tensors of real models on
CPU and checks these counts byte for byte.

Notation: a = activation dtype bytes, h hidden, i intermediate, q = heads x head_dim,
kv = kv_heads x head_dim, r LoRA rank, lb = LoRA weight dtype bytes, T = b x s tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mgft.plan.arch import Arch

MASK_ALIGN = 16  # the memory-efficient SDPA kernel pads the bias's last dimension to this
FP32 = 4
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
    lora_bytes: int = 4  # peft keeps adapters in fp32 on a bf16 base; DeepSpeed casts them to bf16
    lora_dropout: bool = True
    # CUDA's fused dropout keeps a 1-byte bool mask; CPU keeps a mask in the input's dtype.
    dropout_mask_bytes: int = 1
    # Variable-length data: a micro-batch of 2+ sequences has padding, so transformers passes
    # a mask, SDPA uses the memory-efficient kernel and GQA's k/v are repeated to all heads.
    padded: bool = True
    checkpointing: bool = False

    @property
    def tokens(self) -> int:
        return self.micro_batch * self.seq_len

    @property
    def has_mask(self) -> bool:
        return self.padded and self.micro_batch > 1


def _rms_norm(h: int, a: int, weight_trains: bool) -> float:
    """Per token: the fp32 upcast (saved by pow and mul), rsqrt's (T, 1) fp32 result, and,
    when the weight trains, the normalized bf16 tensor its gradient needs."""
    return FP32 * h + FP32 + (a * h if weight_trains else 0)


def _attention(x: Batch) -> float:
    """Per token, what SDPA saves: q, k, v (copied to every head when a mask rules out the
    kernels with native GQA), the output (also o_proj's input) and the fp32 logsumexp;
    with a mask, the additive bias it converts the boolean mask into, in every layer."""
    arch, a = x.arch, x.act_bytes
    # repeat_kv copies unless there is nothing to repeat, or one kv head (then the reshape
    # of the expanded tensor is a view).
    repeats = x.has_mask and 1 < arch.kv_heads < arch.heads
    kv = arch.q_dim if repeats else arch.kv_dim
    per_token = a * (2 * arch.q_dim + 2 * kv) + FP32 * arch.heads
    if x.has_mask:
        per_token += a * math.ceil(x.seq_len / MASK_ALIGN) * MASK_ALIGN
    return per_token


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
    attn = _attention(x)
    if x.full:
        norms = 2 * _rms_norm(h, a, weight_trains=True)
        # q/k/v share one input, gate/up another; SiLU keeps its input, the product of the
        # gate and up branches keeps both factors, and down_proj keeps that product.
        return norms + a * h + attn + a * h + 4 * a * i
    norms = (1 if first else 2) * _rms_norm(h, a, weight_trains=False)
    mlp = 3 * a * i  # SiLU's input; both factors of the product (down_proj's base is frozen)
    if _shared_adapter_inputs(x):
        adapters = a * h + a * h + a * i + 7 * a * x.lora_rank  # o_proj's input is SDPA's output
    else:
        adapters = sum(_adapter(x, n_in, input_needs_grad=not (first and name in QKV))
                       for name, n_in, _ in arch.linears())
    return norms + attn + mlp + adapters


def saved_bytes(x: Batch) -> float:
    """Everything autograd holds at the end of the forward pass, for the whole model."""
    arch, a, t = x.arch, x.act_bytes, x.tokens
    rope = 2 * x.seq_len * arch.head_dim * a  # cos and sin, shared by every layer and sequence
    if x.full:
        head = _rms_norm(arch.hidden, a, weight_trains=True) + a * arch.hidden + 8  # + token ids
    else:
        head = _rms_norm(arch.hidden, a, weight_trains=False)
    if x.checkpointing:
        # Each checkpointed layer keeps only its input; the boolean mask is kept once.
        mask = x.micro_batch * x.seq_len ** 2 if x.has_mask else 0
        return arch.layers * a * arch.hidden * t + head * t + rope + mask
    layers = layer_per_token(x, first=not x.full) + (arch.layers - 1) * layer_per_token(x)
    return layers * t + head * t + rope


def loss_working_set(x: Batch) -> float:
    """The cross-entropy over the vocabulary at the start of the backward pass: log_softmax's
    fp32 output (saved), the fp32 gradient flowing into it, and the fp32 gradient it returns,
    over the b x (s - 1) predicted positions."""
    return 3 * FP32 * x.micro_batch * (x.seq_len - 1) * x.arch.vocab


def recompute_layer(x: Batch) -> float:
    """With checkpointing, the backward pass re-runs one layer and holds its activations."""
    return layer_per_token(x) * x.tokens if x.checkpointing else 0.0


def activation_bytes(x: Batch) -> float:
    """Peak batch-dependent memory: the saved tensors plus the larger of the loss working set
    and (with checkpointing) one recomputed layer; the two never coexist."""
    return saved_bytes(x) + max(loss_working_set(x), recompute_layer(x))
