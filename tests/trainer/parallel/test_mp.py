from __future__ import annotations

import pytest
import torch
from mgft_train.parallel.mp import device_map, model_parallel_map


def test_blocks_split_into_contiguous_near_equal_runs():
    blocks = [f"model.layers.{i}" for i in range(5)]
    placement = model_parallel_map(blocks, ["model.embed_tokens"], ["model.norm", "lm_head"], 2)
    assert [placement[b] for b in blocks] == [0, 0, 0, 1, 1]
    assert placement["model.embed_tokens"] == 0
    assert placement["model.norm"] == placement["lm_head"] == 1


def test_one_gpu_holds_everything_and_zero_gpus_is_an_error():
    assert set(model_parallel_map(["a", "b"], ["e"], ["h"], 1).values()) == {0}
    with pytest.raises(ValueError):
        model_parallel_map(["a"], [], [], 0)


@pytest.mark.parametrize("gpus", [2, 3])
def test_device_map_of_the_1b_preset_covers_every_parameter_once(gpus):
    from mgft_train.demo_assets import PRESETS
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**PRESETS["llama-1b"].config)
    placement = device_map(config, gpus)
    layers = [placement[f"model.layers.{i}"] for i in range(18)]
    assert layers == sorted(layers) and set(layers) == set(range(gpus))
    assert max(layers.count(g) for g in range(gpus)) - min(
        layers.count(g) for g in range(gpus)) <= 1
    assert placement["model.embed_tokens"] == 0
    assert placement["model.norm"] == placement["lm_head"] == gpus - 1
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    for name, _ in skeleton.named_parameters():
        owners = [m for m in placement if name.startswith(m + ".")]
        assert len(owners) == 1, name
