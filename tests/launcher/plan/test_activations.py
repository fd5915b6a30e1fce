"""The activation count against what autograd really saves: real transformers models with
real peft adapters on CPU, every saved tensor's storage counted once; the loss and the
evaluation pass against the live memory torch's MemTracker follows; Liger's and flash varlen's
terms (GPU-only kernels) by hand."""

from __future__ import annotations

import dataclasses

import pytest
from mgft.plan.activations import (
    Batch,
    activation_bytes,
    eval_bytes,
    fused_chunk,
    layer_per_token,
    loss_working_set,
    rope_bytes,
    saved_bytes,
)
from mgft.plan.arch import KNOWN, Arch
from mgft.spec.families import FAMILIES


def tiny(family: str, **changes) -> Arch:
    shape = dict(name="t", family=family, vocab=300, hidden=64, intermediate=176, layers=3,
                 heads=4, kv_heads=2, head_dim=16, tied=False)
    return Arch(**(shape | changes))


TINY = {
    "llama-gqa": tiny("llama"),
    "llama-mha": tiny("llama", layers=2, kv_heads=4),
    "qwen2-tied-bias": tiny("qwen2", intermediate=96, layers=2, kv_heads=1, tied=True),
    # a window shorter than the samples: every layer masked, even unpadded
    "mistral-window": tiny("mistral", sliding_window=8),
    "qwen3-qk-norms": tiny("qwen3"),
    "gemma-tied": tiny("gemma", head_dim=24, tied=True),
    # eager attention (sdpa cannot softcap): score matrices per head, the softcaps' tanh
    "gemma2-softcaps": tiny("gemma2", sliding_window=8, attn_softcap=5.0, final_softcap=3.0,
                            query_scale=16),
    # five local layers (window 8, masked even unpadded) and a global one; two rope tables
    "gemma3-windows": tiny("gemma3_text", layers=6, sliding_window=8, query_scale=16),
    "phi3-fused": tiny("phi3"),
}
# name -> (full, LoRA dropout, adapters cast to bf16 as DeepSpeed does)
MODES = {"full": (True, False, False), "lora-dropout": (False, True, False),
         "lora": (False, False, False), "lora-bf16": (False, False, True)}
B, S, RANK = 2, 32, 8
# transformers' attention for each family: sdpa, but Gemma-2 softcaps, which sdpa cannot.
ATTENTION = {family: "eager" if family == "gemma2" else "sdpa" for family in FAMILIES}
LAYOUTS = ("unpadded", "padded", "packed")


def inputs(arch: Arch, layout: str) -> dict:
    """input_ids plus what tells the samples apart: a padding mask with one short row, or
    packed rows whose position_ids restart at each sample (transformers' packed format)."""
    import torch

    # use_cache=False, as the trainer passes: with a KV cache transformers skips its packing
    # check and builds no mask.
    out = {"input_ids": torch.randint(3, arch.vocab, (B, S)), "use_cache": False}
    if layout == "padded":
        out["attention_mask"] = torch.ones(B, S, dtype=torch.long)
        out["attention_mask"][0, -7:] = 0
    if layout == "packed":
        out["position_ids"] = torch.cat([torch.arange(12), torch.arange(S - 12)]).repeat(B, 1)
    return out


def measured_saved_bytes(arch: Arch, mode: str, layout: str, checkpointing: bool) -> int:
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    full, dropout, bf16_adapters = MODES[mode]
    torch.manual_seed(0)
    config = AutoConfig.for_model(**arch.hf_config(), pad_token_id=0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16,
                                             attn_implementation=ATTENTION[arch.family])
    if checkpointing:
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})
    if not full:
        model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=16,
                                                 lora_dropout=0.05 if dropout else 0.0,
                                                 target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
        if bf16_adapters:
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.data = p.data.to(torch.bfloat16)
    model.train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**inputs(arch, layout))
    return sum(saved.values())


def batch(arch: Arch, mode: str, layout: str, checkpointing: bool = False) -> Batch:
    full, dropout, bf16_adapters = MODES[mode]
    lora_bytes = 2 if bf16_adapters else 4
    # CPU dropout keeps its mask in the input's dtype (CUDA: 1-byte bool).
    return Batch(arch=arch, micro_batch=B, seq_len=S, full=full, lora_rank=RANK,
                 lora_bytes=lora_bytes, lora_dropout=dropout, dropout_mask_bytes=lora_bytes,
                 padded=layout == "padded", packed=layout == "packed",
                 checkpointing=checkpointing)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", TINY)
def test_saved_activations_are_exact(arch: str, mode: str, layout: str) -> None:
    assert measured_saved_bytes(TINY[arch], mode, layout, False) == saved_bytes(
        batch(TINY[arch], mode, layout))


# arch -> boolean masks under sdpa, unpadded and padded/packed: Gemma-3's local layers have
# their own (window 8 < S), even unpadded, and its global layers another when padded.
MASKS = {"llama-gqa": (0, 1), "gemma3-windows": (1, 2)}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", ["full", "lora-dropout"])
@pytest.mark.parametrize("name", MASKS)
def test_checkpointed_activations_are_exact(name: str, mode: str, layout: str) -> None:
    """With checkpointing, rope's cos/sin and the boolean masks are kept alive by the
    recompute closure rather than saved through autograd, so the hooks cannot see them."""
    arch = TINY[name]
    x = batch(arch, mode, layout, checkpointing=True)
    masks = MASKS[name][layout != "unpadded"]
    closure = rope_bytes(x) + masks * B * S * S
    assert measured_saved_bytes(arch, mode, layout, True) == saved_bytes(x) - closure
    assert saved_bytes(x) < saved_bytes(batch(arch, mode, layout))


def test_loss_working_set_by_hand() -> None:
    arch = dataclasses.replace(TINY["llama-gqa"], vocab=10)
    x = Batch(arch=arch, micro_batch=2, seq_len=5)
    # three fp32 (b, s, V) tensors: log-probs, their gradient, the logits' gradient (the
    # labels are shifted by padding, so all s positions are scored)
    assert loss_working_set(x) == 3 * 4 * 2 * 5 * 10


def test_grows_with_batch_and_length_and_shrinks_with_checkpointing() -> None:
    arch = KNOWN["llama-3-8b"]
    base = Batch(arch=arch, micro_batch=4, seq_len=1024)
    assert activation_bytes(dataclasses.replace(base, micro_batch=8)) > activation_bytes(base)
    assert activation_bytes(dataclasses.replace(base, seq_len=2048)) > activation_bytes(base)
    assert activation_bytes(dataclasses.replace(base, checkpointing=True)) < (
        activation_bytes(base) / 3)
    # Per sequence, all but rope's shared cos/sin tables scale with the micro-batch.
    rope = 2 * 1024 * arch.head_dim * 2
    one, four = (saved_bytes(dataclasses.replace(base, micro_batch=b)) - rope for b in (1, 4))
    unpadded_one = saved_bytes(dataclasses.replace(base, micro_batch=1, padded=False)) - rope
    assert one == unpadded_one  # a single sequence is never padded
    assert four > 4 * one  # padding brings repeated k/v and the per-layer mask bias


BIG_VOCAB = dataclasses.replace(TINY["llama-gqa"], vocab=32000)


def measured_live_bytes(arch: Arch, evaluate: bool) -> int:
    """Peak live bytes beyond the weights and their gradients (MemTracker follows every tensor
    torch allocates) over a full fine-tuning forward and backward with the loss transformers
    computes from the labels (the trainer's loss_sum), or over the trainer's no-grad
    evaluation pass."""
    torch = pytest.importorskip("torch")
    from torch.distributed._tools.mem_tracker import MemTracker
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(**arch.hf_config(), pad_token_id=0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16,
                                             attn_implementation=ATTENTION[arch.family])
    rows = 16 if evaluate else B
    batch = inputs(arch, "padded") | {"input_ids": torch.randint(3, arch.vocab, (rows, S))}
    batch["attention_mask"] = torch.ones(rows, S, dtype=torch.long)
    batch["attention_mask"][0, -7:] = 0
    model.train(not evaluate)
    tracker = MemTracker()
    tracker.track_external(model)
    with tracker, torch.set_grad_enabled(not evaluate):
        loss = model(**batch, labels=batch["input_ids"], num_items_in_batch=1).loss
        if not evaluate:
            loss.backward()
    peak = tracker.get_tracker_snapshot("peak")
    # activations, temporaries and anything else; not PARAM, BUFFER, GRAD, OPT (or Total)
    return sum(v for device in peak.values() for kind, v in device.items()
               if str(kind).rsplit(".", 1)[-1] in ("ACT", "TEMP", "OTH"))


def test_training_peak_is_the_saved_activations_plus_the_loss() -> None:
    x = Batch(arch=BIG_VOCAB, micro_batch=B, seq_len=S, full=True)
    assert loss_working_set(x) > 10 * saved_bytes(x)  # the loss dominates, as with 128k vocabs
    assert measured_live_bytes(BIG_VOCAB, evaluate=False) == pytest.approx(
        activation_bytes(x), rel=0.03)


def test_final_softcap_keeps_one_more_tensor_of_logits() -> None:
    """Gemma-2's c·tanh(logits / c) keeps tanh's output, a·T·V: 14% of this peak."""
    arch = dataclasses.replace(TINY["gemma2-softcaps"], vocab=32000)
    x = Batch(arch=arch, micro_batch=B, seq_len=S, full=True)
    uncapped = dataclasses.replace(x, arch=dataclasses.replace(arch, final_softcap=None))
    assert saved_bytes(x) - saved_bytes(uncapped) == 2 * B * S * 32000
    assert measured_live_bytes(arch, evaluate=False) == pytest.approx(
        activation_bytes(x), rel=0.03)


@pytest.mark.parametrize("name", ["llama-gqa", "gemma2-softcaps", "phi3-fused"])
def test_evaluation_peak_is_the_logits_their_fp32_copy_and_log_softmax(name: str) -> None:
    arch = dataclasses.replace(TINY[name], vocab=32000)
    assert measured_live_bytes(arch, evaluate=True) == pytest.approx(
        eval_bytes(arch, 16, S), rel=0.02)


def test_eval_bytes_by_hand() -> None:
    # bf16 logits + their fp32 copy + log_softmax's fp32 output, and the final hidden states
    assert eval_bytes(TINY["llama-gqa"], 16, 100) == (2 + 4 + 4) * 16 * 100 * 300 + (
        2 * 16 * 100 * 64)


def test_liger_varlen_layer_by_hand() -> None:
    """Full fine-tuning, Liger kernels, one packed row through flash varlen (h 64, i 176,
    q 64, kv 32, 4 heads): no mask, no repeated k/v, Liger's norms and SwiGLU."""
    arch = TINY["llama-gqa"]
    x = Batch(arch=arch, micro_batch=2, seq_len=S, full=True, packed=True, varlen=True,
              liger=True, fused_loss=True)
    norms = 2 * (2 * 64 + 4)  # Liger RMSNorm: its bf16 input and the fp32 rstd
    inputs_ = 2 * 64 + 2 * 64  # q/k/v's shared input, gate/up's shared input
    attention = 2 * (2 * 64 + 2 * 32) + 4 * 4  # q, k, v, output; fp32 logsumexp per head
    mlp = 2 * 2 * 176 + 2 * 176  # SwiGLU's gate and up outputs; down_proj's input
    assert layer_per_token(x) == norms + inputs_ + attention + mlp
    repeated = dataclasses.replace(x, varlen_gqa=False)  # k and v copied to all 4 heads
    assert layer_per_token(repeated) - layer_per_token(x) == 2 * 2 * (64 - 32)
    # Without Liger: transformers' norms (fp32 upcast, rstd, normalized bf16) and SwiGLU (3ai)
    plain = dataclasses.replace(x, liger=False)
    assert layer_per_token(plain) - layer_per_token(x) == 2 * (4 * 64 - 2 * 64 + 2 * 64) + (
        2 * 176)
    # cos/sin per token of the packed row, not per position of one sequence
    assert rope_bytes(x) == 2 * (2 * S) * 16 * 2
    assert rope_bytes(dataclasses.replace(x, packed=False, varlen=False)) == 2 * S * 16 * 2
    # the head keeps no input for the fused loss; the embedding's gradient needs the ids
    head = (2 * 64 + 4) + 8
    assert saved_bytes(x) == (3 * layer_per_token(x) + head) * 2 * S + rope_bytes(x)


def test_packing_under_sdpa_keeps_a_mask_even_for_one_row() -> None:
    arch = TINY["llama-gqa"]
    one = Batch(arch=arch, micro_batch=1, seq_len=S, packed=True, padded=False)
    assert one.has_mask  # the block-diagonal mask between the row's samples
    assert not dataclasses.replace(one, packed=False).has_mask
    assert not dataclasses.replace(one, varlen=True).has_mask


def test_fused_loss_by_hand() -> None:
    arch = dataclasses.replace(TINY["llama-gqa"], vocab=1000)
    x = Batch(arch=arch, micro_batch=2, seq_len=S, liger=True, fused_loss=True)
    # 64 tokens over ceil(1000 / 64) = 16 chunks: 4 rows of logits at a time
    assert fused_chunk(x) == 4
    # the hidden states' gradient, the fp32 loss per token, one bf16 chunk of logits
    assert loss_working_set(x) == 2 * 64 * 64 + 4 * 64 + 2 * 4 * 1000
    full = dataclasses.replace(x, full=True)  # + lm_head's whole gradient, made in forward
    assert loss_working_set(full) - loss_working_set(x) == 2 * 1000 * 64
    logits = dataclasses.replace(x, fused_loss=False)
    assert loss_working_set(logits) == 12 * 64 * 1000
    # a single chunk when the vocabulary is small next to the hidden size
    assert fused_chunk(dataclasses.replace(x, arch=dataclasses.replace(arch, vocab=60))) == 64


def test_family_kernels_by_hand() -> None:
    """Full fine-tuning, Liger, one packed row through flash varlen, against Llama's layer of
    the same shapes (h 64, i 176, q 64, kv 32)."""
    llama = Batch(arch=TINY["llama-gqa"], micro_batch=2, seq_len=S, full=True, packed=True,
                  varlen=True, liger=True, fused_loss=True)

    def extra(name: str, **changes) -> float:
        x = dataclasses.replace(llama, arch=TINY[name], **changes)
        return layer_per_token(x) - layer_per_token(dataclasses.replace(llama, **changes))

    # Liger replaces the family's RMSNorm class, so q and k norms too: bf16 input, fp32 rstd
    # per head
    assert extra("qwen3-qk-norms") == (2 * 64 + 4 * 4) + (2 * 32 + 4 * 2)
    # the trainer asks Liger for SwiGLU only: Gemma's GeGLU keeps transformers' 3ai, and
    # Gemma-2 adds two hidden-wide norms
    gemma2 = dataclasses.replace(TINY["gemma2-softcaps"], attn_softcap=None)
    x = dataclasses.replace(llama, arch=gemma2)
    assert layer_per_token(x) - layer_per_token(llama) == 2 * 176 + 2 * (2 * 64 + 4)
    # Phi-3's v is a view of the fused qkv output, which it keeps whole (q + kv more), and
    # o_proj's input is a copy of attention's head-major output (q more)
    assert extra("phi3-fused") == 2 * (64 + 32) + 2 * 64
    assert extra("phi3-fused", varlen_gqa=False) == 2 * 64  # repeated: v is a copy
    # without varlen, Gemma-2 runs eager: per head and key, tanh, fp32 softmax, its bf16 cast
    eager = dataclasses.replace(x, varlen=False, arch=TINY["gemma2-softcaps"])
    scores = 4 * S * (2 + 4 + 2)
    # q, k and v repeated to all 4 heads, the scores, o_proj's own input; no logsumexp
    attention = 2 * (64 + 2 * 64) + scores + 2 * 64
    varlen = 2 * (2 * 64 + 2 * 32) + 4 * 4
    assert layer_per_token(eager) - layer_per_token(x) == attention - varlen
