"""The held-out eval and the reload check (mgft_train.evaluate), each against a plain forward
pass computed here: each sample alone through a plain transformers model (plus the saved
adapter), summed token cross-entropy over the predicted tokens, divided by their count.

Every shared 2-rank job evaluates tiny's held-out rows every EVAL_EVERY steps
(tests/trainer/jobs.py), so the ddp, fsdp and zero3 proofs reuse the strategy runs.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from mgft_train import evaluate
from mgft_train.data import IGNORE, encode, load_rows, make_loader, real_tokens
from mgft_train.data.split import held_out
from mgft_train.distributed import Dist
from mgft_train.evaluate import RELOAD_CHECK_ROWS, eval_batches, reload_check_batches
from mgft_train.main import main
from mgft_train.parallel.engine import Engine

from tests.conftest import EVAL_ROWS
from tests.trainer.cases import STEPS, flags
from tests.trainer.data.conftest import write_jsonl
from tests.trainer.jobs import EVAL_EVERY

CPU = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")
# The shared runs of test_strategies that save an adapter: fsdp and zero3 also merge.
SHARED_RUNS = {"ddp": flags("ddp"), "fsdp": flags("fsdp", "lora", "--save-merged=true"),
               "zero3": flags("zero3", "lora", "--save-merged=true")}


def plain_loss(model, examples) -> float:
    """Each sample alone (no padding, no packing), no dropout: summed next-token
    cross-entropy over the predicted tokens / their count."""
    summed, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for e in examples:
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0, :-1].float()
            targets = torch.tensor(e.labels[1:])
            summed += F.cross_entropy(logits, targets, ignore_index=IGNORE,
                                      reduction="sum").item()
            count += int((targets != IGNORE).sum())
    return summed / count


def base_model(tiny):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny.model_dir, local_files_only=True)


def trained_model(tiny, out):
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model(tiny), out / "adapter")


def plain_engine(model) -> Engine:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    return Engine(model, model, optimizer,
                  torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0), CPU)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_eval_a_micro_batch_at_a_time_is_a_plain_forward_over_the_eval_rows(
        tiny, tokenizer, packed):
    model = base_model(tiny)
    examples = encode(load_rows(tiny.eval_data), tokenizer, seq_len=64)
    batches = eval_batches(examples, micro_batch=4, pad_id=tokenizer.pad_token_id,
                           pack_len=64 if packed else None)
    assert len(batches) > 1
    assert sum(real_tokens(b) for b in batches) == sum(len(e.input_ids) for e in examples)

    loss = evaluate.loss(plain_engine(model), batches, CPU)

    assert loss == pytest.approx(plain_loss(base_model(tiny), examples), rel=1e-5)
    assert model.training  # back in training mode afterwards


def test_ranks_split_the_batches_run_as_many_forwards_and_add_up_to_one_process(
        tiny, tokenizer, monkeypatch):
    """Each rank runs every other batch; the one short of a batch reruns the first (FSDP and
    ZeRO-3 need every rank in every forward) and does not count it."""
    examples = encode(load_rows(tiny.eval_data), tokenizer, seq_len=64)
    batches = eval_batches(examples, micro_batch=4, pad_id=tokenizer.pad_token_id)
    assert len(batches) == 5  # 18 rows: rank 0 gets 3 batches, rank 1 gets 2
    model = base_model(tiny)
    forwards = {0: 0, 1: 0}
    sums: list[list[float]] = []
    monkeypatch.setattr(evaluate.distributed, "all_reduce",
                        lambda values, ctx, op="sum": sums.append(values) or values)
    for rank in (0, 1):
        ctx = Dist(rank=rank, local_rank=rank, world_size=2, device=torch.device("cpu"),
                   backend="gloo")
        handle = model.register_forward_hook(
            lambda *_, r=rank: forwards.__setitem__(r, forwards[r] + 1))
        evaluate.loss(plain_engine(model), batches, ctx)
        handle.remove()

    assert forwards == {0: 3, 1: 3}
    summed, tokens = (sum(column) for column in zip(*sums, strict=True))
    assert summed / tokens == pytest.approx(evaluate.loss(plain_engine(model), batches, CPU),
                                            rel=1e-6)


def test_eval_leaves_4bit_weights_in_the_layout_training_uses(tiny, tokenizer):
    """On a CPU with AVX512-BF16, bitsandbytes repacks an eval-mode 4-bit weight in place for
    inference (unless quant.keep_training_layout says not to); training after an eval would go
    on from that layout, and ZeRO-3's next checkpoint fails on it. Where bitsandbytes never
    repacks, this passes as is."""
    from mgft.spec.job import TrainSpec, Tuning
    from mgft_train.model import load_model

    model = load_model(TrainSpec(model=str(tiny.model_dir), dataset="d", tuning=Tuning.QLORA),
                       CPU)
    packed = {n: p.detach().clone() for n, p in model.named_parameters()
              if not p.is_floating_point()}
    assert len(packed) == 2 * 7  # 2 blocks x 7 projections, 4-bit
    examples = encode(load_rows(tiny.eval_data), tokenizer, seq_len=64)

    evaluate.loss(plain_engine(model), eval_batches(examples, micro_batch=4,
                                                    pad_id=tokenizer.pad_token_id), CPU)

    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in packed.items())


def test_reload_check_is_the_first_16_trained_samples_a_micro_batch_at_a_time(tiny, tokenizer):
    examples = encode(load_rows(tiny.data)[:20], tokenizer, seq_len=64)
    chunks = reload_check_batches(examples, tokenizer.pad_token_id, rows=5)
    assert [len(b["input_ids"]) for b in chunks] == [5, 5, 5, 1]  # 16 rows, never more
    model = base_model(tiny)
    assert evaluate.loss(plain_engine(model), chunks, CPU) == pytest.approx(
        plain_loss(base_model(tiny), examples[:RELOAD_CHECK_ROWS]), rel=1e-5)


def test_eval_split_trains_on_the_other_rows_and_evaluates_where_asked_and_at_the_end(
        tiny, tokenizer, tmp_path, capsys, single_process_env):
    """One process, packed: rows held out by --eval-split are never trained on (one epoch
    counts exactly the other rows' tokens), and the eval points land at every 3rd step and
    at the last."""
    records = [json.loads(line) for line in tiny.data.read_text().splitlines()[:48]]
    data = write_jsonl(tmp_path / "d.jsonl", records)
    out = tmp_path / "out"
    argv = [f"--model={tiny.model_dir}", f"--dataset={data}", f"--output={out}",
            "--seq-len=64", "--micro-batch=4", "--lr=3e-3", "--epochs=1", "--eval-split=0.25",
            "--eval-every=3", "--save=final"]
    assert main(argv) == 0

    m = json.loads((out / "metrics.json").read_text())
    held = held_out(48, 0.25, seed=0)
    rows = load_rows(str(data))
    trained = encode([r for i, r in enumerate(rows) if i not in held], tokenizer, 64)
    loader = make_loader(trained, micro_batch=4, pad_id=tokenizer.pad_token_id, rank=0,
                         world_size=1, seed=0, pack_len=64)
    assert m["steps"] == len(loader) == 5
    assert m["tokens"] == sum(len(e.input_ids) for e in trained)
    assert [p["step"] for p in m["eval"]["points"]] == [3, 5]
    assert m["eval"]["samples"] == len(held) == 12
    held_examples = encode([rows[i] for i in held], tokenizer, 64)
    assert m["eval"]["final_loss"] == pytest.approx(
        plain_loss(trained_model(tiny, out), held_examples), rel=1e-5)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [" eval_loss " in line for line in lines] == [False, False, True, False, True]


@pytest.mark.e2e
@pytest.mark.parametrize("strategy", sorted(SHARED_RUNS))
def test_two_ranks_evaluate_where_asked_and_the_final_eval_is_a_plain_forward(
        strategy, tiny, tokenizer, trainer_job):
    from tests.trainer.test_tracking import tensorboard_scalars

    job = trainer_job(*SHARED_RUNS[strategy])
    held = job.metrics["eval"]
    assert held["source"] == "--eval-dataset eval.jsonl" and held["samples"] == EVAL_ROWS
    steps = list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    assert [p["step"] for p in held["points"]] == steps and steps[-1] == STEPS
    assert sorted(tensorboard_scalars(job.out / "tensorboard", "eval/loss")) == steps
    reported = [line for line in job.output.splitlines()
                if line.startswith("step ") and " eval_loss " in line]
    assert [line.split("/")[0] for line in reported] == [f"step {s}" for s in steps]

    examples = encode(load_rows(tiny.eval_data), tokenizer, seq_len=64)
    final = plain_loss(trained_model(tiny, job.out), examples)
    assert held["final_loss"] == held["points"][-1]["loss"] == pytest.approx(final, rel=1e-5)
    assert final < plain_loss(base_model(tiny), examples)  # it learned the task, not the rows
