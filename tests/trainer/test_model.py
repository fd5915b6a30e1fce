from __future__ import annotations

import math

import pytest
import torch
from mgft.spec.job import Strategy, TrainSpec, Tuning
from mgft_train import model
from mgft_train.distributed import Dist
from mgft_train.errors import UsageError

CPU = Dist(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"), backend="none")


def spec(tiny_dir, **kw) -> TrainSpec:
    return TrainSpec(model=str(tiny_dir), dataset="d", **kw)


def test_lora_targets_default_to_every_linear_projection(tiny):
    net = model.load_model(spec(tiny.model_dir, lora_r=4), CPU)
    wrapped = {n.rsplit(".", 1)[0] for n, _ in net.named_modules() if n.endswith(".lora_A")}
    assert {n.rsplit(".", 1)[-1] for n in wrapped} == {"q_proj", "k_proj", "v_proj", "o_proj",
                                                      "gate_proj", "up_proj", "down_proj"}
    assert len(wrapped) == 2 * 7
    assert all(p.requires_grad == ("lora_" in n) for n, p in net.named_parameters())


def test_named_lora_targets_and_hyperparameters_are_applied(tiny):
    net = model.load_model(spec(tiny.model_dir, lora_targets="q_proj, v_proj", lora_r=2,
                                lora_alpha=8.0, lora_dropout=0.0), CPU)
    config = net.peft_config["default"]
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    assert (config.r, config.lora_alpha) == (2, 8.0)
    assert sum(1 for n, _ in net.named_modules() if n.endswith(".lora_A")) == 2 * 2


def test_a_target_the_model_lacks_is_a_usage_error(tiny):
    with pytest.raises(UsageError) as err:
        model.load_model(spec(tiny.model_dir, lora_targets="attn_proj"), CPU)
    assert str(err.value).startswith("--lora-targets attn_proj: ")


def test_full_tuning_trains_everything(tiny):
    net = model.load_model(spec(tiny.model_dir, tuning=Tuning.FULL), CPU)
    assert all(p.requires_grad for p in net.parameters())


def test_random_init_builds_from_the_config_alone_and_equally_on_every_rank(tiny, tmp_path):
    from transformers import AutoConfig

    AutoConfig.from_pretrained(tiny.model_dir).save_pretrained(tmp_path)  # no weights
    # (The tiny assets were built with seed 0: another seed shows these are not those.)
    a = model.load_model(spec(tmp_path, random_init=True, tuning=Tuning.FULL, seed=1), CPU)
    b = model.load_model(spec(tmp_path, random_init=True, tuning=Tuning.FULL, seed=1), CPU)
    loaded = model.load_model(spec(tiny.model_dir, tuning=Tuning.FULL), CPU)
    for (name, pa), pb, pl in zip(a.named_parameters(), b.parameters(), loaded.parameters(),
                                  strict=True):
        assert torch.equal(pa, pb), name  # seeded: FSDP/ZeRO shard replicas of this
        assert pa.shape == pl.shape
    assert not torch.equal(a.lm_head.weight, loaded.lm_head.weight)  # not the saved weights


def test_dtypes_and_placement_follow_device_strategy_and_tuning():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert model.param_dtype(cpu, TrainSpec(model="m", dataset="d")) is torch.float32
    assert model.param_dtype(cuda, TrainSpec(model="m", dataset="d")) is torch.bfloat16
    # FSDP keeps fp32 master shards of fully trained weights and computes in bf16.
    assert model.param_dtype(cuda, TrainSpec(model="m", dataset="d", strategy=Strategy.FSDP,
                                             tuning=Tuning.FULL)) is torch.float32
    qlora_zero3 = TrainSpec(model="m", dataset="d", strategy=Strategy.ZERO3,
                            tuning=Tuning.QLORA)
    assert model.placement(qlora_zero3, CPU, None) is None  # ZeRO-3 places it
    assert model.placement(TrainSpec(model="m", dataset="d"), CPU, None) == {"": CPU.device}


def test_describe_reads_sizes_and_no_quantization(tiny):
    net = model.load_model(spec(tiny.model_dir, lora_r=4), CPU)
    described = model.describe(net)
    assert described["quantization"] is None
    assert 0 < described["trainable_params"] < described["total_params"]


@pytest.mark.parametrize("tuning", [Tuning.LORA, Tuning.FULL])
def test_activation_checkpointing_recomputes_and_gives_the_same_gradients(tiny, tokenizer,
                                                                          tuning):
    from mgft_train.data import collate, encode, load_rows
    from mgft_train.loop import loss_sum

    batch = collate(encode(load_rows(tiny.data)[:4], tokenizer, seq_len=64), pad_id=0)
    grads, recomputed = [], []
    for on in (False, True):
        net = model.load_model(spec(tiny.model_dir, tuning=tuning, lora_dropout=0.0,
                                    activation_checkpointing=on), CPU)
        assert model.describe(net)["activation_checkpointing"] is on
        net.train()
        calls = []
        # A pre-hook: the recompute stops early, once it has what the backward pass needs.
        norm = next(m for n, m in net.named_modules() if n.endswith("layers.0.input_layernorm"))
        norm.register_forward_pre_hook(lambda *_, seen=calls: seen.append(1))
        loss_sum(net, batch).backward()
        recomputed.append(len(calls))
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad})
    assert recomputed == [1, 2]  # the layer ran again in the backward pass
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_model_type_outside_the_proven_families_exits_2_naming_them(tiny, tmp_path, capsys,
                                                                      single_process_env):
    from mgft_train.main import main
    from transformers import AutoTokenizer, GPTNeoXConfig

    model_dir = tmp_path / "neox"
    GPTNeoXConfig(vocab_size=512, hidden_size=32, num_hidden_layers=1,
                  num_attention_heads=2, intermediate_size=64).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(tiny.model_dir).save_pretrained(model_dir)
    args = [f"--model={model_dir}", f"--dataset={tiny.data}", f"--output={tmp_path / 'o'}",
            "--max-steps=1", "--random-init=true"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model_type 'gpt_neox'" in err
    assert "Gemma-2 (gemma2)" in err and "Phi-3 (phi3)" in err


@pytest.mark.parametrize(("model_type", "tuning"), [("gemma2", "lora"), ("phi3", "lora"),
                                                    ("gemma2", "qlora")])
def test_a_family_other_than_llama_trains_end_to_end(model_type, tuning, tiny, tmp_path,
                                                     single_process_env):
    """Through mgft-train itself: the tiny family config with the tiny tokenizer's vocab
    (qlora: built at random in 4 bits, quant.build_random_4bit)."""
    import json

    from mgft_train import tiny_families
    from mgft_train.main import main
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny.model_dir)
    model_dir = tmp_path / model_type
    tiny_families.config(model_type, vocab_size=len(tokenizer), pad_token_id=0,
                         bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = [f"--model={model_dir}", f"--dataset={tiny.data}", f"--output={tmp_path / 'o'}",
            "--max-steps=2", "--seq-len=64", "--random-init=true", "--save=none",
            f"--tuning={tuning}"]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and all(math.isfinite(x) for x in metrics["losses"])
    assert (metrics["quantization"] is not None) == (tuning == "qlora")
