from __future__ import annotations

import pytest
from mgft.spec import TrainSpec, Tuning
from mgft_train import save
from mgft_train.model import load_model


def test_lora_saves_an_adapter_via_a_partial_dir_and_never_overwrites(tiny, tokenizer, tmp_path):
    import torch

    spec = TrainSpec(model=str(tiny.model_dir), dataset="d", lora_r=4)
    model = load_model(spec, torch.device("cpu"))
    stale = tmp_path / ".adapter.partial"
    stale.mkdir()
    (stale / "junk").write_text("from a crashed run")

    saved = save.save(model, tokenizer, tmp_path, Tuning.LORA)

    assert saved == tmp_path / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {
        p.name for p in saved.iterdir()}
    assert not (saved / "junk").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    with pytest.raises(OSError):
        save.save(model, tokenizer, tmp_path, Tuning.LORA)


def test_full_tuning_saves_the_model():
    assert save.result_dir("/o", Tuning.FULL).name == "model"
    assert save.result_dir("/o", Tuning.LORA).name == "adapter"
