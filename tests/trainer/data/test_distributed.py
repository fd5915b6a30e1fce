"""Two real ranks (torchrun, CPU/gloo) training on packed chat data: the data path under DDP."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mgft.spec.job import TrainSpec
from mgft_train import demo_assets as tiny_mod

STEPS = 20
SEQ_LEN = 256
FLAGS = [f"--max-steps={STEPS}", "--micro-batch=2", f"--seq-len={SEQ_LEN}", "--lr=3e-3",
         "--seed=0", "--chat-template=chatml"]


@pytest.fixture(scope="module")
def chat_run(tiny, tmp_path_factory, cpu_job_env):
    root = tmp_path_factory.mktemp("chat")
    data = tiny_mod.write_data(root / "data.parquet", [
        tiny_mod.as_format(r, "sharegpt") for r in tiny_mod.make_rows(256, seed=0)], "parquet")
    out = root / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "mgft_train", f"--model={tiny.model_dir}", f"--dataset={data}",
           f"--output={out}", *FLAGS]  # --packing is on by default
    proc = subprocess.run(cmd, env=cpu_job_env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return data, proc.stdout, json.loads((out / "metrics.json").read_text())


@pytest.mark.e2e
def test_two_ranks_learn_from_packed_sharegpt_rows(chat_run, tokenizer):
    data, stdout, report = chat_run
    assert (report["world_size"], report["backend"], report["strategy"]) == (2, "gloo", "ddp")
    assert report["steps"] == len(report["losses"]) == STEPS
    assert report["last_loss"] < report["first_loss"] - 1.0
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("data: ")]  # rank 0 only
    assert line.startswith("data: 256 sharegpt rows from data.parquet; 256 samples, ")
    assert "; packed into " in line


@pytest.mark.e2e
def test_first_loss_is_the_token_mean_of_both_ranks_first_packed_batches(chat_run, tiny,
                                                                         tokenizer):
    """Before step 1 every lora_B is zero, so the model is the base model. Its loss over the
    packed micro-batches each rank drew first, pooled over their trained tokens, is what
    step 1 logged: the run packed the way make_loader packs, and the loop fed the packing
    (position_ids, no attention_mask) to the model."""
    import torch
    from mgft_train.data import flat_rows, label_tokens, make_loader, prepare
    from mgft_train.loop import loss_sum
    from transformers import AutoModelForCausalLM

    data, _, report = chat_run
    base = AutoModelForCausalLM.from_pretrained(tiny.model_dir, local_files_only=True).eval()
    spec = TrainSpec(model=str(tiny.model_dir), dataset=str(data), seq_len=SEQ_LEN,
                     chat_template="chatml")
    examples = prepare(spec, tokenizer).examples
    total, count = 0.0, 0
    for rank in (0, 1):
        loader = make_loader(examples, micro_batch=2, pad_id=tokenizer.pad_token_id, rank=rank,
                             world_size=2, seed=0, pack_len=SEQ_LEN, flat=flat_rows(base))
        first = next(iter(loader))
        assert (first["position_ids"] == 0).sum() > first["input_ids"].shape[0]  # shared rows
        with torch.no_grad():
            total += loss_sum(base, first).item()
        count += label_tokens(first)
    assert report["first_loss"] == pytest.approx(total / count, rel=1e-4)
