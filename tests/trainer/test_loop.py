from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from mgft.spec.job import TrainSpec
from mgft_train import loop
from mgft_train.data import IGNORE, Row, collate, encode, make_loader
from mgft_train.distributed import Dist
from mgft_train.parallel import ddp

CTX = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")


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
    engine = ddp.apply(base_model, TrainSpec(model="m", dataset="d"), CTX, total=1)

    base_model.zero_grad()
    loss, tokens, stop = loop.train_step(engine, batches, CTX)
    grads = [p.grad.clone() for p in base_model.parameters()]

    base_model.zero_grad()
    logits = [base_model(input_ids=b["input_ids"]).logits[0, :-1] for b in batches]
    labels = [b["labels"][0, 1:] for b in batches]
    expected = F.cross_entropy(torch.cat(logits), torch.cat(labels), ignore_index=IGNORE)
    expected.backward()

    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert tokens == sum(b["input_ids"].numel() for b in batches)
    assert stop is False
    for got, want in zip(grads, (p.grad for p in base_model.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_a_requested_stop_comes_back_from_the_step(base_model, tokenizer):
    batch = collate(encode([Row(instruction="a", output="b")], tokenizer, 64),
                    pad_id=tokenizer.pad_token_id)
    engine = ddp.apply(base_model, TrainSpec(model="m", dataset="d"), CTX, total=1)
    assert loop.train_step(engine, [batch], CTX, stop_requested=True)[2] is True


def test_a_stream_started_at_k_is_the_full_stream_from_k(tiny, tokenizer):
    from mgft_train.data import load_rows

    examples = encode(load_rows(tiny.data)[:40], tokenizer, 64)
    loader = make_loader(examples, micro_batch=4, pad_id=tokenizer.pad_token_id, rank=0,
                         world_size=1, seed=3)
    per_epoch = len(loader)  # 10
    full = list(itertools.islice(loop.micro_batches(loader), 3 * per_epoch))
    for skip in (0, 7, per_epoch, per_epoch + 3):
        tail = list(itertools.islice(loop.micro_batches(loader, skip=skip), 3 * per_epoch - skip))
        assert [b["input_ids"].tolist() for b in tail] == \
            [b["input_ids"].tolist() for b in full[skip:]], skip


def test_starting_a_stream_draws_nothing_from_the_global_rng(tiny, tokenizer):
    """Dropout masks after a resume must not depend on where in an epoch the run started."""
    from mgft_train.data import load_rows

    examples = encode(load_rows(tiny.data)[:8], tokenizer, 64)
    loader = make_loader(examples, micro_batch=4, pad_id=tokenizer.pad_token_id, rank=0,
                         world_size=1, seed=0)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    next(loop.micro_batches(loader, skip=1))
    assert torch.equal(torch.get_rng_state(), before)
