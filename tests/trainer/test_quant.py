from __future__ import annotations

import pytest
import torch
from mgft.spec.job import Strategy
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


def structure(model: torch.nn.Module) -> list[tuple]:
    """Every module's class, and every parameter's shape, dtype and trainability."""
    modules = [(n, type(m).__name__) for n, m in model.named_modules()]
    params = [(n, tuple(p.shape), p.dtype, p.requires_grad) for n, p in model.named_parameters()]
    return modules + params


@pytest.mark.parametrize("model_type", ["llama", "gemma2", "phi3"])
@pytest.mark.parametrize("strategy", [Strategy.DDP, Strategy.FSDP])
def test_random_init_4bit_has_the_structure_of_a_saved_checkpoint_loaded_in_4bit(
        model_type, strategy, tmp_path):
    """The expectation is transformers' own path: random weights saved, then loaded with the
    same quantization config. Both then get the same LoRA."""
    from mgft.spec.job import TrainSpec, Tuning
    from mgft_train import tiny_families
    from mgft_train.model import add_lora
    from transformers import AutoModelForCausalLM

    config = tiny_families.config(model_type)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, device_map={"": "cpu"}, local_files_only=True,
        quantization_config=quant.bnb_config(strategy, torch.float32))
    built = quant.build_random_4bit(config, strategy, torch.device("cpu"), torch.float32, {})
    assert structure(built) == structure(loaded)
    assert quant.describe(built) == quant.describe(loaded)
    assert not any(t.is_meta for t in [*built.parameters(), *built.buffers()])
    # Each layer holds its quantization state too: FSDP's shards lose the weight's, and
    # bitsandbytes restores it from the layer.
    import bitsandbytes as bnb

    def layer_states(model):
        return [m.quant_state is m.weight.quant_state for m in model.modules()
                if isinstance(m, bnb.nn.Linear4bit)]

    assert layer_states(built) == layer_states(loaded) and all(layer_states(built))
    spec = TrainSpec(model="m", dataset="d", tuning=Tuning.QLORA, strategy=strategy)
    built, loaded = add_lora(built, spec), add_lora(loaded, spec)
    assert structure(built) == structure(loaded)
    # Random, as transformers initialises: the 4-bit weights dequantize to ~N(0, std).
    layer = next(m for m in built.modules() if isinstance(m, bnb.nn.Linear4bit))
    weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
    assert weight.std().item() == pytest.approx(config.initializer_range, rel=0.1)
    # The model runs: a forward pass gives finite logits.
    out = built(input_ids=torch.tensor([[3, 4, 5, 6]]), use_cache=False).logits
    assert torch.isfinite(out).all()
