"""mgft's packed attention (attention.py) on the tiny Llama; every family: test_families.py."""

from __future__ import annotations

import pytest
import torch
from mgft.spec.job import Kernels, TrainSpec
from mgft_train import attention
from mgft_train.data import encode, load_rows
from mgft_train.data.packing import collate_packed, pack
from mgft_train.loop import loss_sum

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


def spec(**kw) -> TrainSpec:
    return TrainSpec(model="m", dataset="d", **kw)


def test_varlen_only_for_packed_gpu_runs_with_kernels_on():
    from mgft_train.model import attention_for

    assert attention_for(spec(), CPU) == {}
    assert attention_for(spec(packing=False), CUDA) == {}
    assert attention_for(spec(kernels=Kernels.NONE), CUDA) == {}
    assert attention_for(spec(), CUDA) == {"attn_implementation": attention.VARLEN}


def test_varlen_attention_keeps_samples_apart_through_cu_seq_lens(tiny, tokenizer):
    """Its CPU path, sample by sample: every packed sample scores as it does alone, and
    the control (the same row declared one sample) does not, so cu_seq_lens is what works."""
    from transformers import AutoModelForCausalLM

    attention.register()
    model = AutoModelForCausalLM.from_pretrained(
        tiny.model_dir, local_files_only=True, attn_implementation=attention.VARLEN).eval()
    examples = encode(load_rows(tiny.data)[:16], tokenizer, seq_len=128)
    packs = pack(examples, capacity=128, seed=0)[:2]
    flat = collate_packed(packs, pad_id=0, flat=True)
    with torch.no_grad():
        alone = [loss_sum(model, collate_packed([(e,)], pad_id=0, flat=True)).item()
                 for p in packs for e in p]
        together = loss_sum(model, flat).item()
        one_sample = dict(flat, cu_seq_lens=flat["cu_seq_lens"][[0, -1]])
        leaky = loss_sum(model, one_sample).item()
    assert len(alone) >= 4
    assert together == pytest.approx(sum(alone), rel=1e-5)
    assert abs(leaky - sum(alone)) > 1e-2


def test_a_saved_varlen_model_reloads_without_mgft(tiny, tmp_path):
    """The implementation name is a runtime choice, not part of what is saved."""
    from transformers import AutoModelForCausalLM

    attention.register()
    model = AutoModelForCausalLM.from_pretrained(
        tiny.model_dir, local_files_only=True, attn_implementation=attention.VARLEN)
    model.save_pretrained(tmp_path)
    assert attention.VARLEN not in (tmp_path / "config.json").read_text()
