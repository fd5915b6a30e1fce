from __future__ import annotations

import pytest
import torch
from mgft_train.data import encode, load_rows
from mgft_train.distributed import Dist
from mgft_train.evaluate import EVAL_ROWS, eval_batches, eval_loss
from mgft_train.parallel.engine import Engine

CPU = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")


def test_eval_goes_a_micro_batch_at_a_time_and_gives_the_one_batch_mean(tiny, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny.model_dir, local_files_only=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    engine = Engine(model, model, optimizer,
                    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0), CPU)
    examples = encode(load_rows(tiny.data)[:20], tokenizer, seq_len=64)
    chunks = eval_batches(examples, tokenizer.pad_token_id, rows=5)
    assert [len(b["input_ids"]) for b in chunks] == [5, 5, 5, 1]  # 16 rows, never more
    [whole] = eval_batches(examples, tokenizer.pad_token_id, rows=EVAL_ROWS)
    assert eval_loss(engine, chunks, CPU.device) == pytest.approx(
        eval_loss(engine, [whole], CPU.device), rel=1e-5)
    assert model.training  # back in training mode afterwards
