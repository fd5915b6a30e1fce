"""Model shapes: published parameter counts, and every known architecture against the real
transformers (and peft) model built on torch's meta device (no memory, no download)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from mgft.plan.arch import KNOWN, LAYOUTS, Arch, from_config, normalize, resolve
from mgft.spec.errors import SpecError
from mgft.spec.families import FAMILIES

# From the model cards / safetensors index of the published checkpoints.
PUBLISHED = {"llama-3-8b": 8_030_261_248, "llama-3.2-1b": 1_235_814_400,
             "llama-3-70b": 70_553_706_496, "qwen2.5-7b": 7_615_616_512,
             "mistral-7b": 7_248_023_552, "llama-2-7b": 6_738_415_616,
             "qwen3-8b": 8_190_735_360, "gemma-2b": 2_506_172_416,
             "gemma-7b": 8_537_680_896, "gemma-2-2b": 2_614_341_888,
             "gemma-2-9b": 9_241_705_984, "gemma-2-27b": 27_227_128_320,
             "gemma-3-1b": 999_885_952, "phi-3-mini-4k": 3_821_079_552,
             "phi-3-medium-4k": 13_960_238_080}
# Qwen3's model cards give billions, rounded: (all parameters, non-embedding). They pin which
# sizes tie the embeddings (0.6B to 4B).
QWEN3_CARDS = {"qwen3-0.6b": ("0.6", "0.44"), "qwen3-1.7b": ("1.7", "1.4"),
               "qwen3-4b": ("4.0", "3.6"), "qwen3-8b": ("8.2", "6.95"),
               "qwen3-14b": ("14.8", "13.2"), "qwen3-32b": ("32.8", "31.2")}


def tiny(family: str, **changes) -> Arch:
    """Small shapes with what tells families apart in view: grouped kv heads and a head_dim
    unlike hidden / heads (Phi-3 derives its head_dim). Gemma-2 and -3 always scale queries
    by a query_pre_attn_scalar."""
    shape = dict(vocab=300, hidden=64, intermediate=96, layers=2, heads=4, kv_heads=2,
                 head_dim=16 if family == "phi3" else 24, tied=False,
                 query_scale=24 if LAYOUTS[family].softcap else None)
    return Arch(name=f"tiny-{family}", family=family, **(shape | changes))


# Every family, and each config switch that adds parameters.
TINY = {f: tiny(f) for f in FAMILIES} | {
    "llama-biased": tiny("llama", attention_bias=True, mlp_bias=True),
    "qwen3-biased": tiny("qwen3", attention_bias=True),
    "gemma-tied": tiny("gemma", tied=True),
    "gemma2-tied-windowed": tiny("gemma2", tied=True, sliding_window=8, attn_softcap=5.0,
                                 final_softcap=3.0, query_scale=24),
    "gemma3-biased": tiny("gemma3_text", attention_bias=True, sliding_window=8),
    "phi3-mha": tiny("phi3", kv_heads=4, sliding_window=8),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_parameter_counts_match_the_published_checkpoints(name: str) -> None:
    assert KNOWN[name].params == PUBLISHED[name]


@pytest.mark.parametrize("name", QWEN3_CARDS)
def test_qwen3_counts_match_the_model_cards(name: str) -> None:
    arch = KNOWN[name]
    embeddings = arch.embed_params * (1 if arch.tied else 2)
    total, non_embedding = QWEN3_CARDS[name]
    decimals = len(total.split(".")[1]), len(non_embedding.split(".")[1])
    assert f"{arch.params / 1e9:.{decimals[0]}f}" == total
    assert f"{(arch.params - embeddings) / 1e9:.{decimals[1]}f}" == non_embedding


def test_lora_count_by_hand() -> None:
    # Llama-3-8B, r=16 on q,k,v,o,gate,up,down: r x (in + out) per matrix, 32 layers.
    per_layer = (4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096) + 3 * (4096 + 14336)
    assert KNOWN["llama-3-8b"].lora_params(16) == 32 * 16 * per_layer == 41_943_040


def test_phi3_lists_its_fused_projections() -> None:
    """LoRA all-linear adapts them and QLoRA quantizes them: one Linear each."""
    arch = KNOWN["phi-3-medium-4k"]  # 40 heads, 10 kv heads of 128
    assert arch.linears() == [("qkv_proj", 5120, 5120 + 2 * 1280), ("o_proj", 5120, 5120),
                              ("gate_up_proj", 5120, 2 * 17920), ("down_proj", 17920, 5120)]


def test_every_family_has_a_layout() -> None:
    assert set(LAYOUTS) == set(FAMILIES)


@pytest.fixture(scope="module")
def meta_models():
    """Arch -> (parameters of the transformers model, trainable parameters of its peft LoRA
    r=8, the Linear names peft adapts in layer 0), both built on the meta device."""
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    def build(config_json: dict):
        # Phi-3's default pad_token_id (32000) is outside a tiny vocabulary.
        config = AutoConfig.for_model(**({"pad_token_id": 0} | config_json))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        total = sum(p.numel() for p in model.parameters())
        lora = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
        adapted = {name.rsplit(".", 1)[-1] for name, module in lora.named_modules()
                   if hasattr(module, "lora_A") and ".layers.0." in name}
        return total, sum(p.numel() for p in lora.parameters() if p.requires_grad), adapted

    return build


def assert_matches(arch: Arch, meta_models) -> None:
    total, lora, adapted = meta_models(arch.hf_config())
    assert (arch.params, arch.lora_params(8)) == (total, lora)
    assert {name for name, _, _ in arch.linears()} == adapted


@pytest.mark.parametrize("name", KNOWN)
def test_every_known_architecture_matches_transformers_and_peft(name: str, meta_models) -> None:
    """Counts are linear in the depth, so 1- and 2-layer versions pin every term (per layer,
    embeddings, head) at a fraction of the cost of building 80 layers."""
    for layers in (1, 2):
        assert_matches(dataclasses.replace(KNOWN[name], layers=layers), meta_models)


@pytest.mark.parametrize("name", TINY)
def test_every_family_matches_transformers_and_peft(name: str, meta_models) -> None:
    assert_matches(TINY[name], meta_models)


@pytest.mark.parametrize("name", [*KNOWN, *TINY])
def test_hf_config_reads_back_through_transformers(name: str) -> None:
    """hf_config means to transformers what the Arch says: read back from the config
    transformers builds of it (its own defaults filled in), it is the same Arch. Mistral-7B's
    window of None would come back as the config class's 4096 if hf_config left it out."""
    pytest.importorskip("torch")
    from transformers import AutoConfig

    arch = (KNOWN | TINY)[name]
    config = AutoConfig.for_model(**arch.hf_config(), pad_token_id=0).to_dict()
    assert from_config(config, arch.name) == arch


@pytest.mark.parametrize("name", [n for n, a in (KNOWN | TINY).items() if a.sliding_window])
def test_local_layers_are_the_ones_transformers_gives_the_window(name: str) -> None:
    """Which layers attend through the window (Gemma-2: every other one, Gemma-3: five of six)
    decides which get a mask of their own; Mistral and Phi-3 give it to every layer."""
    pytest.importorskip("torch")
    from transformers import AutoConfig

    arch = (KNOWN | TINY)[name]
    config = AutoConfig.for_model(**arch.hf_config(), pad_token_id=0)
    kinds = getattr(config, "layer_types", None) or ["sliding_attention"] * arch.layers
    assert arch.local_layers == kinds.count("sliding_attention")


@pytest.mark.parametrize("family", FAMILIES)
def test_keys_a_config_leaves_out_take_the_family_defaults(family: str, meta_models) -> None:
    """A config.json without the keys that have defaults (older Gemma files have no
    tie_word_embeddings) is counted as transformers builds it."""
    config = {"model_type": family, "vocab_size": 300, "hidden_size": 64,
              "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4}
    total, lora, _ = meta_models(config)
    arch = from_config(config, "partial")
    assert (arch.params, arch.lora_params(8)) == (total, lora)


@pytest.mark.parametrize("given,expected", [
    ("meta-llama/Meta-Llama-3-8B-Instruct", "llama-3-8b"),
    ("/models/Llama-3.2-1B", "llama-3.2-1b"),
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
    ("mistralai/Mistral-7B-v0.3", "mistral-7b"),
    ("LLAMA-3-70B/", "llama-3-70b"),
    ("google/gemma-2-9b-it", "gemma-2-9b"),
    ("google/gemma-3-1b-pt", "gemma-3-1b"),
    ("Qwen/Qwen3-8B-Base", "qwen3-8b"),
    ("microsoft/Phi-3-mini-4k-instruct", "phi-3-mini-4k"),
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


def test_unknown_family_lists_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "falcon"}))
    with pytest.raises(SpecError) as err:
        resolve(str(tmp_path))
    assert "\n" not in str(err.value)
    assert all(kind in err.value.fix for kind in FAMILIES)
    assert "Gemma-2 (gemma2)" in err.value.fix


@pytest.mark.parametrize("config,needle", [
    ({"model_type": "gpt2", "n_embd": 768}, "model_type 'gpt2'"),
    ({"model_type": "gemma3", "text_config": {}}, "model_type 'gemma3'"),
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
