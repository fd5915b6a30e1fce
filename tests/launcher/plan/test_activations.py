"""The activation count against what autograd really saves: real transformers models with
real peft adapters on CPU, every saved tensor's storage counted once."""

from __future__ import annotations

import dataclasses

import pytest
from mgft.plan.activations import Batch, activation_bytes, loss_working_set, saved_bytes
from mgft.plan.arch import KNOWN, Arch

TINY = {
    "llama-gqa": Arch(name="t", family="llama", vocab=300, hidden=64, intermediate=176,
                      layers=3, heads=4, kv_heads=2, head_dim=16, tied=False),
    "llama-mha": Arch(name="t", family="llama", vocab=300, hidden=64, intermediate=176,
                      layers=2, heads=4, kv_heads=4, head_dim=16, tied=False),
    "qwen2-tied-bias": Arch(name="t", family="qwen2", vocab=300, hidden=64, intermediate=96,
                            layers=2, heads=4, kv_heads=1, head_dim=16, tied=True,
                            qkv_bias=True),
}
# name -> (full, LoRA dropout, adapters cast to bf16 as DeepSpeed does)
MODES = {"full": (True, False, False), "lora-dropout": (False, True, False),
         "lora": (False, False, False), "lora-bf16": (False, False, True)}
B, S, RANK = 2, 32, 8


def measured_saved_bytes(arch: Arch, mode: str, padded: bool, checkpointing: bool) -> int:
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    full, dropout, bf16_adapters = MODES[mode]
    torch.manual_seed(0)
    config = AutoConfig.for_model(**arch.hf_config())
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16,
                                             attn_implementation="sdpa")
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

    ids = torch.randint(3, arch.vocab, (B, S))
    mask = torch.ones(B, S, dtype=torch.long)
    if padded:
        mask[0, -7:] = 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, attention_mask=mask)
    return sum(saved.values())


def batch(arch: Arch, mode: str, padded: bool, checkpointing: bool = False) -> Batch:
    full, dropout, bf16_adapters = MODES[mode]
    lora_bytes = 2 if bf16_adapters else 4
    # CPU dropout keeps its mask in the input's dtype (CUDA: 1-byte bool).
    return Batch(arch=arch, micro_batch=B, seq_len=S, full=full, lora_rank=RANK,
                 lora_bytes=lora_bytes, lora_dropout=dropout, dropout_mask_bytes=lora_bytes,
                 padded=padded, checkpointing=checkpointing)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", TINY)
def test_saved_activations_are_exact(arch: str, mode: str, padded: bool) -> None:
    assert measured_saved_bytes(TINY[arch], mode, padded, False) == saved_bytes(
        batch(TINY[arch], mode, padded))


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("mode", ["full", "lora-dropout"])
def test_checkpointed_activations_are_exact(mode: str, padded: bool) -> None:
    """With checkpointing, rope's cos/sin and the boolean mask are kept alive by the recompute
    closure rather than saved through autograd, so the hooks cannot see them."""
    arch = TINY["llama-gqa"]
    x = batch(arch, mode, padded, checkpointing=True)
    closure = 2 * S * arch.head_dim * 2 + (B * S * S if padded else 0)
    assert measured_saved_bytes(arch, mode, padded, True) == saved_bytes(x) - closure
    assert saved_bytes(x) < saved_bytes(batch(arch, mode, padded))


def test_loss_working_set_by_hand() -> None:
    arch = dataclasses.replace(TINY["llama-gqa"], vocab=10)
    x = Batch(arch=arch, micro_batch=2, seq_len=5)
    # three fp32 (b, s-1, V) tensors: log-probs, their gradient, the logits' gradient
    assert loss_working_set(x) == 3 * 4 * 2 * 4 * 10


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
