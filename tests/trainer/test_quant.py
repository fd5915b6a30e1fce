from __future__ import annotations

import pytest
import torch
from mgft.spec import Strategy
from mgft_train import quant


@pytest.mark.parametrize("strategy,storage", [
    (Strategy.DDP, torch.uint8), (Strategy.ZERO2, torch.uint8), (Strategy.MP, torch.uint8),
    (Strategy.FSDP, torch.bfloat16), (Strategy.ZERO3, torch.bfloat16)])
def test_nf4_double_quant_stored_as_the_sharded_dtype_where_sharded(strategy, storage):
    config = quant.bnb_config(strategy, torch.bfloat16)
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype is torch.bfloat16
    assert config.bnb_4bit_quant_storage is storage


def test_a_4bit_load_is_described_from_its_layers(tiny):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        tiny.model_dir, dtype=torch.float32, device_map={"": "cpu"}, local_files_only=True,
        quantization_config=quant.bnb_config(Strategy.DDP, torch.float32))
    assert quant.describe(model) == {"linear4bit_layers": 14, "quant_type": "nf4",
                                     "double_quant": True, "compute_dtype": "float32",
                                     "storage_dtype": "uint8"}
    assert quant.describe(torch.nn.Linear(2, 2)) is None
