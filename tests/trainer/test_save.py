"""The final save: what is written, that it is not empty, and that reloading it with plain
transformers/peft reproduces the trained model's loss on a fixed set of training rows
(metrics.json's reload_check_loss), including from FSDP and ZeRO-3 shards, where naive saves
write nothing or empty adapters."""

from __future__ import annotations

import pytest
import torch
from mgft.spec.job import TrainSpec, Tuning
from mgft_train import save
from mgft_train.distributed import Dist

from tests.trainer.cases import flags

CTX = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")


def reload_check_loss(model, tiny, tokenizer) -> float:
    """The trainer's reload check: the first rows it trained on, no dropout; here in one batch
    (the trainer goes a micro-batch at a time: summed losses, the same mean)."""
    from mgft_train.data import encode, label_tokens, load_rows
    from mgft_train.evaluate import RELOAD_CHECK_ROWS, reload_check_batches
    from mgft_train.loop import loss_sum

    [batch] = reload_check_batches(encode(load_rows(tiny.data)[:RELOAD_CHECK_ROWS], tokenizer,
                                          64), tokenizer.pad_token_id, rows=RELOAD_CHECK_ROWS)
    with torch.no_grad():
        return loss_sum(model.eval(), batch).item() / label_tokens(batch)


def base_model(tiny):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny.model_dir, local_files_only=True)


def adapter_tensors(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


def test_publish_replaces_a_stale_partial_and_renames_into_place(tmp_path, tokenizer):
    stale = tmp_path / ".adapter.partial"
    stale.mkdir()
    (stale / "junk").write_text("from a crashed run")

    final = save.publish(tmp_path / "adapter", lambda d: (d.mkdir(), (d / "w").write_text("1")),
                         tokenizer)

    assert final == tmp_path / "adapter"
    assert sorted(p.name for p in final.iterdir()) == ["tokenizer.json", "tokenizer_config.json",
                                                       "w"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_single_process_lora_saves_adapter_and_merged_model(tiny, tokenizer, tmp_path):
    from mgft_train.model import load_model
    from mgft_train.parallel import ddp

    spec = TrainSpec(model=str(tiny.model_dir), dataset="d", output=str(tmp_path), lora_r=4,
                     save_merged=True)
    model = load_model(spec, CTX)
    with torch.no_grad():  # a "trained" adapter: lora_B away from its zero init
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    trained = reload_check_loss(model, tiny, tokenizer)
    engine = ddp.apply(model, spec, CTX, total=1)

    saved = save.save_final(engine, tokenizer, spec, CTX)

    assert saved == {"adapter": tmp_path / "adapter", "merged": tmp_path / "merged"}
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reloaded = PeftModel.from_pretrained(base_model(tiny), tmp_path / "adapter")
    assert reload_check_loss(reloaded, tiny, tokenizer) == pytest.approx(trained, rel=1e-6)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", local_files_only=True)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert reload_check_loss(merged, tiny, tokenizer) == pytest.approx(trained, rel=1e-4)


def test_full_tuning_saves_the_model():
    assert save.result_dir("/o", Tuning.FULL).name == "model"
    assert save.result_dir("/o", Tuning.LORA).name == "adapter"
    assert save.result_dir("/o", Tuning.QLORA).name == "adapter"


@pytest.mark.e2e
@pytest.mark.parametrize("strategy", ["fsdp", "zero3"])
def test_sharded_lora_writes_a_real_adapter_and_merged_model(strategy, tiny, tokenizer,
                                                             trainer_job):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = trainer_job(*flags(strategy, "lora", "--save-merged=true"))
    trained = job.metrics["reload_check_loss"]
    tensors = adapter_tensors(job.out / "adapter")
    assert len(tensors) == 2 * 7 * 2  # 2 blocks x 7 projections x (A, B)
    assert all(t.numel() > 0 for t in tensors.values())  # not ZeRO-3's empty placeholders
    assert all(t.abs().max() > 0 for n, t in tensors.items() if "lora_B" in n)  # trained

    reloaded = PeftModel.from_pretrained(base_model(tiny), job.out / "adapter")
    assert reload_check_loss(reloaded, tiny, tokenizer) == pytest.approx(trained, rel=1e-5)
    merged = AutoModelForCausalLM.from_pretrained(job.out / "merged", local_files_only=True)
    assert reload_check_loss(merged, tiny, tokenizer) == pytest.approx(trained, rel=1e-4)
    assert reload_check_loss(base_model(tiny), tiny, tokenizer) > trained + 0.5


@pytest.mark.e2e
@pytest.mark.parametrize("strategy", ["fsdp", "zero3"])
def test_sharded_full_tuning_saves_a_whole_model(strategy, tiny, tokenizer, trainer_job):
    from transformers import AutoModelForCausalLM

    job = trainer_job(*flags(strategy, "full"))
    model = AutoModelForCausalLM.from_pretrained(job.out / "model", local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) == job.metrics["total_params"]
    assert reload_check_loss(model, tiny, tokenizer) == pytest.approx(
        job.metrics["reload_check_loss"], rel=1e-5)


@pytest.mark.e2e
def test_every_finished_run_leaves_metrics_tensorboard_and_a_loss_curve(trainer_job):
    job = trainer_job(*flags("zero2"))
    names = {p.name for p in job.out.iterdir()}
    assert {"adapter", "checkpoints", "metrics.json", "loss.png", "tensorboard"} <= names
    assert any((job.out / "tensorboard").glob("events.out.tfevents.*"))
    checkpoints = sorted(p.name for p in (job.out / "checkpoints").iterdir())
    assert checkpoints == ["step-00000020", "step-00000030"]  # every 10 steps, last 2 kept
