from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mgft.spec import TrainSpec
from mgft_train import loop
from mgft_train.data import IGNORE, Row, collate, encode
from mgft_train.distributed import Dist


def spec(**kw) -> TrainSpec:
    return TrainSpec(model="m", dataset="d", **kw)


def test_max_steps_wins_over_epochs_and_epochs_round_up():
    assert loop.total_steps(spec(max_steps=7, epochs=3.0), batches_per_epoch=100) == 7
    assert loop.total_steps(spec(epochs=2.0, grad_accum=3), batches_per_epoch=10) == 7
    assert loop.total_steps(spec(epochs=0.5), batches_per_epoch=9) == 5
    assert loop.total_steps(spec(epochs=0.01), batches_per_epoch=1) == 1


def test_lr_warms_up_linearly_then_decays_to_the_floor():
    total = 100
    warmup = loop.warmup_steps(total)
    assert warmup == 3
    factors = [loop.lr_factor(s, total, warmup) for s in range(total)]
    assert factors[:warmup] == pytest.approx([1 / 3, 2 / 3, 1.0])
    after = factors[warmup:]
    assert after[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))
    assert after[-1] == pytest.approx(loop.MIN_LR_RATIO, abs=1e-3)
    assert min(factors) >= loop.MIN_LR_RATIO


@pytest.fixture(scope="module")
def base_model(tiny):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny.model_dir, local_files_only=True)
    return model.eval()  # no dropout: two passes over the same batch must agree


def test_step_loss_and_gradients_are_the_mean_over_all_predicted_tokens(base_model, tokenizer):
    # Micro-batches of very different lengths: a mean of per-batch means would differ.
    rows = [Row(instruction="Repeat the words.", input="red", output="red"),
            Row(instruction="Sort the words.", input="owl fox bee cat dog sun moon two",
                output="bee cat dog fox moon owl sun two")]
    batches = [collate([e], pad_id=tokenizer.pad_token_id) for e in encode(rows, tokenizer, 512)]
    ctx = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")

    base_model.zero_grad()
    loss, tokens = loop.train_step(base_model, batches, ctx)
    grads = [p.grad.clone() for p in base_model.parameters()]

    base_model.zero_grad()
    logits = [base_model(input_ids=b["input_ids"]).logits[0, :-1] for b in batches]
    labels = [b["labels"][0, 1:] for b in batches]
    expected = F.cross_entropy(torch.cat(logits), torch.cat(labels), ignore_index=IGNORE)
    expected.backward()

    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert tokens == sum(b["input_ids"].numel() for b in batches)
    for got, want in zip(grads, (p.grad for p in base_model.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_cpu_peak_memory_is_in_bytes():
    # The test process holds torch and a model: well over 50 MB, well under 1 TB.
    assert 50e6 < loop.peak_memory_bytes(torch.device("cpu")) < 1e12
