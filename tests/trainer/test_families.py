"""Every supported family trains as transformers computes it.

The reference is transformers' own `eager` attention run on each sample alone: the
implementation that defines each family's arithmetic (softcapping, windows), with no packing
involved. mgft's side is its real path: the packed micro-batch from `collate_packed`,
`model_inputs`, and the `mgft_varlen` attention (its per-sample kernel on the CPU, which
applies the same mask and score functions the GPU's flex kernel is given; the varlen kernel
itself needs a GPU, where bench/fidelity.py makes the same comparison). fp32 throughout.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from mgft.spec.families import FAMILIES
from mgft_train import attention, tiny_families
from mgft_train.data.batches import model_inputs
from mgft_train.data.encode import Example
from mgft_train.data.packing import collate_packed

TOL = 1e-5
# Longer than the window (8) and not multiples of anything, so windows and boundaries bite.
LENGTHS = (5, 13, 21, 30)


def samples() -> list[Example]:
    return tiny_families.samples(LENGTHS)


def build(model_type: str, implementation: str) -> torch.nn.Module:
    """The same random base and LoRA (B random too, so A has gradients) every call."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    attention.register()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_families.config(model_type),
                                             attn_implementation=implementation)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False,
                      lora_dropout=0.0)
    return get_peft_model(model, lora).train()


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[0, :-1].float(), labels[0, 1:], reduction="none")


def packed_run(model: torch.nn.Module) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    batch = collate_packed([tuple(samples())], pad_id=0, flat=True)
    logits = model(**model_inputs(batch)).logits
    cu = batch["cu_seq_lens"].tolist()
    # Per sample: the positions inside it predict its next tokens (none crosses a boundary).
    losses = [F.cross_entropy(logits[0, a:b - 1], batch["input_ids"][0, a + 1:b],
                              reduction="none") for a, b in zip(cu[:-1], cu[1:], strict=True)]
    torch.stack([x.sum() for x in losses]).sum().backward()
    return [x.detach() for x in losses], lora_grads(model)


def reference_run(model: torch.nn.Module) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    losses = []
    for e in samples():
        ids = torch.tensor([e.input_ids])
        out = token_losses(model(input_ids=ids, use_cache=False).logits, ids)
        out.sum().backward()  # gradients add up over the samples, as the packed sum's do
        losses.append(out.detach())
    return losses, lora_grads(model)


def lora_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}


def assert_same(ours: tuple, ref: tuple, tol: float = TOL) -> None:
    (losses, grads), (ref_losses, ref_grads) = ours, ref
    for got, want in zip(losses, ref_losses, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=tol)
    assert grads.keys() == ref_grads.keys() and grads
    for name, grad in grads.items():
        scale = ref_grads[name].abs().max().clamp(min=1.0)
        torch.testing.assert_close(grad, ref_grads[name], rtol=0, atol=tol * scale,
                                   msg=lambda m, n=name: f"{n}: {m}")


def max_loss_gap(ours: tuple, ref: tuple) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(ours[0], ref[0], strict=True))


@pytest.fixture(scope="module")
def references() -> dict[str, tuple]:
    return {t: reference_run(build(t, "eager")) for t in FAMILIES}


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_packed_training_equals_eager_on_each_sample_alone(model_type, references):
    assert_same(packed_run(build(model_type, attention.VARLEN)), references[model_type])


@pytest.mark.parametrize(("model_type", "dropped"), [
    ("gemma2", {"softcap": None}), ("gemma2", {"window": None}),
    ("mistral", {"window": None}), ("qwen2", {"window": None}),
    ("gemma3_text", {"window": None}), ("phi3", {"window": None})])
def test_a_dropped_feature_is_caught(model_type, dropped, references, monkeypatch):
    """The control: the same comparison with one feature ignored, as the GPU path used to
    ignore them, is far outside the tolerance. So the test above can see such a defect."""
    real = attention.Features.of.__func__

    def dropping(cls, kwargs):
        return replace(real(cls, kwargs), **dropped)

    monkeypatch.setattr(attention.Features, "of", classmethod(dropping))
    assert max_loss_gap(packed_run(build(model_type, attention.VARLEN)),
                        references[model_type]) > 1e-3


@pytest.mark.parametrize("features", [
    attention.Features(), attention.Features(window=8),
    attention.Features(window=8, softcap=1.0), attention.Features(softcap=0.5)])
def test_flex_path_arithmetic_equals_per_sample(features):
    """The GPU's flex kernel is given these mask and score functions; flex runs forward-only
    on CPUs, uncompiled, so its arithmetic (padding, document ids, block mask) is checked
    here against the per-sample path."""
    torch.manual_seed(0)
    cu = torch.tensor([0, 5, 18, 39, 69], dtype=torch.int32)
    q = torch.randn(69, 4, 16)
    k, v = torch.randn(69, 2, 16), torch.randn(69, 2, 16)
    flex = attention.flex(q, k, v, cu, 0.25, features, compiled=False)
    dense = attention._per_sample(q, k, v, cu, 0.25, features, dropout=0.0)
    torch.testing.assert_close(flex, dense, rtol=0, atol=1e-5)


def test_varlen_window_is_transformers_window():
    """transformers' sliding mask keeps kv > q - window: the query and window - 1 before it,
    which flash attention spells as a left window of window - 1."""
    assert attention.Features(window=8).window_size() == (7, 0)
    assert attention.Features().window_size() == (-1, 0)
    mask = attention.Features(window=3).mask_mod(torch.zeros(6, dtype=torch.long))
    idx = torch.arange(6)
    seen = mask(None, None, idx[:, None], idx[None, :])
    assert seen[5].tolist() == [False, False, False, True, True, True]


def test_padded_batches_honour_softcap_and_window(references):
    """Evaluation and --no-packing batches have no cu_seq_lens: one padded batch of every
    sample through mgft_varlen equals eager on each sample alone (Gemma-2: softcap, window)."""
    from mgft_train.data.batches import collate

    model = build("gemma2", attention.VARLEN).eval()
    ref = build("gemma2", "eager").eval()
    batch = collate(samples(), pad_id=0)
    with torch.no_grad():
        logits = model(**model_inputs(batch)).logits
        for i, e in enumerate(samples()):
            n = len(e.input_ids)
            want = ref(input_ids=torch.tensor([e.input_ids]), use_cache=False).logits[0]
            torch.testing.assert_close(logits[i, :n], want, rtol=0, atol=TOL)


def test_unknown_attention_features_are_refused():
    from mgft_train.errors import UsageError

    with pytest.raises(UsageError, match="s_aux.*--kernels none"):
        attention.Features.of({"s_aux": torch.zeros(1), "position_ids": None})
    with pytest.raises(UsageError, match="is_causal=False"):
        attention.Features.of({"is_causal": False})


def test_all_linear_adapts_phi3s_fused_projections():
    model = build("phi3", "eager")
    adapted = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert adapted == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
