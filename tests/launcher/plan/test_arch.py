"""Model shapes: published parameter counts, and every known architecture against the real
transformers (and peft) model built on torch's meta device (no memory, no download)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from mgft.errors import SpecError
from mgft.plan.arch import KNOWN, normalize, resolve

# From the model cards / safetensors index of the published checkpoints.
PUBLISHED = {"llama-3-8b": 8_030_261_248, "llama-3.2-1b": 1_235_814_400,
             "llama-3-70b": 70_553_706_496, "qwen2.5-7b": 7_615_616_512,
             "mistral-7b": 7_248_023_552, "llama-2-7b": 6_738_415_616}


@pytest.mark.parametrize("name", PUBLISHED)
def test_parameter_counts_match_the_published_checkpoints(name: str) -> None:
    assert KNOWN[name].params == PUBLISHED[name]


def test_lora_count_by_hand() -> None:
    # Llama-3-8B, r=16 on q,k,v,o,gate,up,down: r x (in + out) per matrix, 32 layers.
    per_layer = (4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096) + 3 * (4096 + 14336)
    assert KNOWN["llama-3-8b"].lora_params(16) == 32 * 16 * per_layer == 41_943_040


@pytest.fixture(scope="module")
def meta_models():
    """Arch -> parameter counts of the transformers model and its peft LoRA r=8 trainables,
    both built on the meta device."""
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    def build(arch):
        config = AutoConfig.for_model(**arch.hf_config())
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        total = sum(p.numel() for p in model.parameters())
        lora = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
        return total, sum(p.numel() for p in lora.parameters() if p.requires_grad)

    return build


@pytest.mark.parametrize("name", KNOWN)
def test_every_known_architecture_matches_transformers_and_peft(name: str, meta_models) -> None:
    """Counts are linear in the depth, so 1- and 2-layer versions pin every term (per layer,
    embeddings, head) at a fraction of the cost of building 80 layers."""
    for layers in (1, 2):
        arch = dataclasses.replace(KNOWN[name], layers=layers)
        total, lora = meta_models(arch)
        assert (arch.params, arch.lora_params(8)) == (total, lora)


@pytest.mark.parametrize("given,expected", [
    ("meta-llama/Meta-Llama-3-8B-Instruct", "llama-3-8b"),
    ("/models/Llama-3.2-1B", "llama-3.2-1b"),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
    ("mistralai/Mistral-7B-v0.3", "mistral-7b"),
    ("LLAMA-3-70B/", "llama-3-70b"),
])
def test_names_normalize_to_the_shape(given: str, expected: str) -> None:
    assert normalize(given) == expected
    assert resolve(given) is KNOWN[expected]


def test_config_json_file_or_directory(tmp_path: Path) -> None:
    config = KNOWN["qwen2.5-7b"].hf_config()
    (tmp_path / "config.json").write_text(json.dumps(config))
    for where in (tmp_path, tmp_path / "config.json"):
        arch = resolve(str(where))
        assert arch.params == KNOWN["qwen2.5-7b"].params and arch.qkv_bias


@pytest.mark.parametrize("config,needle", [
    ({"model_type": "gpt2", "n_embd": 768}, "model_type 'gpt2'"),
    ({"model_type": "llama", "hidden_size": 64}, "config.json has no"),
    ({"model_type": "llama", "hidden_size": "x", "num_attention_heads": 2, "vocab_size": 9,
      "intermediate_size": 8, "num_hidden_layers": 1}, "non-numeric"),
])
def test_unusable_configs_name_the_problem(tmp_path: Path, config: dict, needle: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(SpecError, match=needle) as err:
        resolve(str(tmp_path))
    assert err.value.field == "--model"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(SpecError) as err:
        resolve("gpt-5")
    assert "llama-3-8b" in err.value.fix and "qwen2.5-7b" in err.value.fix
