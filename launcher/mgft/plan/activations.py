"""Activation memory of one training micro-batch through a decoder of any family mgft trains
(transformers' <family>ForCausalLM, peft LoRA), counted tensor by tensor; and what the loss
and the trainer's evaluation pass hold over the vocabulary.

Each term is a tensor that autograd saves in the forward pass and frees in the backward pass;
docs/plan.md lists where each comes from. A test measures the saved tensors of real models of
every family on CPU and checks these counts byte for byte (transformers' own kernels);
Liger's kernels and flash varlen attention run only on GPUs, so their terms are counted from
their sources.

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
QKV = ("q_proj", "k_proj", "v_proj", "qkv_proj")


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


def _norm(x: Batch, width: int, rows: int, weight_trains: bool) -> float:
    """Per token, one RMSNorm over `width` features applied `rows` times per token (q/k norms
    normalize each head). transformers': the fp32 upcast (saved by pow and mul), rsqrt's fp32
    result per row, and, when the weight trains, the normalized tensor its gradient needs (in
    the activation dtype; Gemma's norm multiplies by 1 + w in fp32, so fp32 there). Liger's:
    its input and the fp32 rstd per row, whether the weight trains or not."""
    a = x.act_bytes
    if x.liger:
        return a * width + FP32 * rows
    normalized = (FP32 if x.arch.layout.gemma else a) * width if weight_trains else 0
    return FP32 * width + FP32 * rows + normalized


def _rms_norm(x: Batch, weight_trains: bool) -> float:
    """Per token, one hidden-wide RMSNorm."""
    return _norm(x, x.arch.hidden, 1, weight_trains)


def _layer_norms(x: Batch, first: bool) -> float:
    """Per token, a layer's norms: `norms` hidden-wide ones (the first LoRA layer's input norm
    keeps nothing: its input needs no gradient) and Qwen3's and Gemma-3's q and k norms."""
    arch = x.arch
    norms = (arch.layout.norms - (1 if first else 0)) * _rms_norm(x, weight_trains=x.full)
    if arch.layout.qk_norm:
        norms += (_norm(x, arch.q_dim, arch.heads, x.full)
                  + _norm(x, arch.kv_dim, arch.kv_heads, x.full))
    return norms


def _norm_constants(x: Batch, first: bool) -> float:
    """Per layer, not per token: Gemma's norm saves its fp32 (1 + w) for the gradient of its
    input, in every norm the gradient passes through (not with Liger's kernel)."""
    layout = x.arch.layout
    if not layout.gemma or x.liger:
        return 0.0
    widths = (layout.norms - (1 if first else 0)) * x.arch.hidden
    return FP32 * (widths + (2 * x.arch.head_dim if layout.qk_norm else 0))


def _eager(x: Batch) -> bool:
    """Whether attention runs through transformers' eager code: Gemma-2's default, since sdpa
    cannot softcap, wherever mgft's packed attention does not take over."""
    return x.arch.layout.eager and not x.varlen


def _masked(x: Batch, local: bool) -> bool:
    """Whether sdpa gets a mask in this layer: padding or packing, or a sliding window as
    long as the sequence (transformers skips the mask only when kv_length < window)."""
    if x.varlen:
        return False
    window = x.arch.sliding_window
    return x.has_mask or (local and window is not None and x.seq_len >= window)


def _repeats_kv(x: Batch, masked: bool) -> bool:
    """Whether k and v are copied to every q head before attention. transformers' repeat_kv
    runs when a mask rules out SDPA's native GQA (and always under eager), and copies unless
    there is one kv head (then the reshape of the expanded tensor is a view); the varlen path
    repeats (always a copy) only when its kernel lacks GQA."""
    arch = x.arch
    if x.varlen:
        return not x.varlen_gqa and arch.kv_heads < arch.heads
    return (masked or _eager(x)) and 1 < arch.kv_heads < arch.heads


def _attention(x: Batch, local: bool = False) -> float:
    """Per token, what attention saves.

    sdpa and varlen: q, k, v (copied to every head when repeated), the output (also o_proj's
    input) and the fp32 logsumexp; with a mask, the additive bias SDPA converts the boolean
    mask into, in every masked layer. Phi-3 slices q, k and v out of one qkv_proj output:
    q and k are copied by rope, but v stays a view of it unless repeated, so the whole output
    stays (q + kv more).
    eager (Gemma-2): q, k and v (repeated), and per head and key the softcap's tanh output,
    softmax's fp32 output and its cast to the activation dtype; the output is a fresh tensor
    that only o_proj keeps (`_o_proj_copy`)."""
    arch, a = x.arch, x.act_bytes
    masked = _masked(x, local)
    repeated = _repeats_kv(x, masked)
    kv = arch.q_dim if repeated else arch.kv_dim
    if _eager(x):
        per_key = FP32 + a + (a if arch.attn_softcap is not None else 0)
        return a * (arch.q_dim + 2 * kv) + per_key * arch.heads * x.seq_len
    per_token = a * (2 * arch.q_dim + 2 * kv) + FP32 * arch.heads
    if arch.layout.fused and not repeated:
        per_token += a * (arch.q_dim + arch.kv_dim)
    if masked:
        per_token += a * math.ceil(x.seq_len / MASK_ALIGN) * MASK_ALIGN
    return per_token


def _o_proj_copy(x: Batch) -> float:
    """Per token, o_proj's input where it is not the tensor attention saved as its output,
    counted where o_proj (full) or its 16-bit adapter saves it. Eager attention's output is
    never saved by attention. sdpa's and varlen's output follows the query's memory layout;
    Phi-3's rope builds q with torch.cat, head by head, so the (tokens, heads x dim) reshape
    for o_proj copies it (seen on CPU and on an H200, sdpa and varlen alike); other families'
    q stays token-major and the reshape is a view."""
    return x.act_bytes * x.arch.q_dim if _eager(x) or x.arch.layout.fused else 0


def _mlp(x: Batch) -> float:
    """Per token, the gated product's saved inputs: transformers keeps the activation's input
    (SiLU, or Gemma's tanh GELU) and both factors of the product (3ai); Liger's fused SiLU-mul
    keeps the gate and up outputs (2ai). The trainer asks Liger for SwiGLU only
    (mgft_train.kernels), so Gemma's GeGLU stays transformers'. Phi-3's gate and up are halves
    of one output: the same bytes."""
    liger = x.liger and not x.arch.layout.gemma
    return (2 if liger else 3) * x.act_bytes * x.arch.intermediate


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


def layer_per_token(x: Batch, first: bool = False, local: bool = False) -> float:
    """Bytes one decoder layer saves per token. In a LoRA model the first layer's input (the
    frozen embedding's output) needs no gradient, so its input norm and the dropout masks on
    q/k/v keep nothing. `local`: a sliding-window layer."""
    arch, a = x.arch, x.act_bytes
    h, i = arch.hidden, arch.intermediate
    norms, attn, mlp = _layer_norms(x, first and not x.full), _attention(x, local), _mlp(x)
    out = _o_proj_copy(x)
    if x.full:
        # q/k/v share one input (the norm's output), gate/up another; down_proj keeps the
        # gated product.
        return norms + a * h + attn + out + a * h + mlp + a * i
    if _shared_adapter_inputs(x):
        # o_proj's input is attention's output, or its own copy (`_o_proj_copy`)
        adapters = a * h + a * h + a * i + out + len(arch.linears()) * a * x.lora_rank
    else:
        adapters = sum(_adapter(x, n_in, input_needs_grad=not (first and name in QKV))
                       for name, n_in, _ in arch.linears())
    return norms + attn + mlp + adapters


def _head_per_token(x: Batch) -> float:
    """The final norm; Gemma-2's final softcap, c·tanh(logits / c), whose tanh keeps its
    output (the fused loss softcaps chunk by chunk); and when the head trains: lm_head's input
    (the fused loss computes its gradients in the forward pass and keeps no input) and the
    token ids the embedding's gradient needs."""
    a, arch = x.act_bytes, x.arch
    norm = _rms_norm(x, weight_trains=x.full)
    if arch.final_softcap is not None and not x.fused_loss:
        norm += a * arch.vocab
    if not x.full:
        return norm
    return norm + (0 if x.fused_loss else a * arch.hidden) + TOKEN_ID


def _head_constants(x: Batch) -> float:
    """What does not grow with the tokens outside the layers: Gemma's final norm's (1 + w)
    and, when the embedding trains, the 0-d scale its output is multiplied by."""
    layout = x.arch.layout
    final = FP32 * x.arch.hidden if layout.gemma and not x.liger else 0
    scale = x.act_bytes if layout.gemma and x.full else 0
    return final + scale


def rope_bytes(x: Batch) -> float:
    """cos and sin, computed once and shared by every layer: one row of seq_len positions for
    unpacked batches (position_ids default to 0..s-1), one per token for packed ones. Gemma-3
    computes them for each layer type (two rope thetas)."""
    positions = x.tokens if x.packed or x.varlen else x.seq_len
    arch = x.arch
    tables = 2 if arch.layout.rope_per_type and 0 < arch.local_layers < arch.layers else 1
    return tables * 2 * positions * arch.head_dim * x.act_bytes


def _layer_kinds(x: Batch) -> list[tuple[int, bool, bool]]:
    """(how many, first, local) for the layers: layer 0 is local whenever any layer is."""
    arch = x.arch
    local = arch.local_layers
    return [(1, True, local > 0), (max(local - 1, 0), False, True),
            (arch.layers - max(local, 1), False, False)]


def _masks(x: Batch) -> int:
    """Boolean masks transformers builds for sdpa: one per layer type that needs one."""
    if x.varlen or _eager(x):
        return 0
    kinds = {local for n, _, local in _layer_kinds(x) if n}
    return sum(_masked(x, local) for local in kinds)


def saved_bytes(x: Batch) -> float:
    """Everything autograd holds at the end of the forward pass, for the whole model."""
    arch, a, t = x.arch, x.act_bytes, x.tokens
    head = _head_per_token(x) * t + _head_constants(x)
    if x.checkpointing:
        # Each checkpointed layer keeps only its input; each boolean mask is kept once.
        mask = _masks(x) * x.micro_batch * x.seq_len ** 2
        return arch.layers * a * arch.hidden * t + head + rope_bytes(x) + mask
    layers = sum(n * (layer_per_token(x, first=first, local=local) * t
                      + _norm_constants(x, first=first and not x.full))
                 for n, first, local in _layer_kinds(x))
    return layers + head + rope_bytes(x)


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
    fp32 gradient flowing into it and the fp32 gradient it returns, 12·T·V. Gemma-2's final
    softcap (c·tanh(logits / c)) saves tanh's output in the forward pass too (a·T·V: counted
    with the head in `saved_bytes`).
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
    """With checkpointing, the backward pass re-runs one layer and holds its activations (the
    larger kind, where local and global layers differ)."""
    if not x.checkpointing:
        return 0.0
    kinds = {local for n, _, local in _layer_kinds(x) if n}
    return max(layer_per_token(x, local=local) for local in kinds) * x.tokens


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
