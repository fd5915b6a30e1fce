"""CPU proof of every strategy and tuning mode that can run on CPU: 2 ranks, gloo, a tiny
Llama. Each test asserts what really ran, read from metrics.json (which inspects the model
objects), and that the loss went down; a silent fallback to one process or plain DDP fails.
"""

from __future__ import annotations

import pytest

from tests.trainer.cases import STEPS, flags

pytestmark = pytest.mark.e2e

# (strategy, tuning, extra flags). --save-merged where test_save checks the merged model.
RUNS = [
    ("ddp", "lora", ()),
    ("fsdp", "lora", ("--save-merged=true",)),
    ("fsdp", "full", ()),
    ("zero1", "lora", ()),
    ("zero2", "lora", ()),
    ("zero3", "lora", ("--save-merged=true",)),
    ("zero3", "full", ()),
    ("ddp", "qlora", ()),
    ("fsdp", "qlora", ()),
    ("zero2", "qlora", ()),
    ("zero3", "qlora", ()),
]


def _id(run: tuple) -> str:
    return f"{run[0]}-{run[1]}"


@pytest.mark.parametrize("run", RUNS, ids=_id)
def test_two_gloo_ranks_ran_the_requested_strategy_and_learned(run, trainer_job):
    strategy, tuning, extra = run
    m = trainer_job(*flags(strategy, tuning, *extra)).metrics
    assert (m["world_size"], m["backend"], m["device"]) == (2, "gloo", "cpu")
    assert m["strategy"] == strategy, m["strategy_evidence"]
    assert m["steps"] == len(m["losses"]) == STEPS
    tail = sum(m["losses"][-5:]) / 5
    assert tail < m["first_loss"] - 1.0, m["losses"]
    if tuning == "full":
        assert m["trainable_params"] == m["total_params"]
    else:
        assert 0 < m["trainable_params"] < m["total_params"] / 2


@pytest.mark.parametrize("tuning", ["lora", "qlora"])
def test_ddp_is_a_ddp_wrapper(tuning, trainer_job):
    m = trainer_job(*flags("ddp", tuning)).metrics
    assert m["model_wrapper"] == "DistributedDataParallel"
    assert m["strategy_evidence"] == {"wrapper": "DistributedDataParallel"}


@pytest.mark.parametrize("tuning,extra", [("lora", ("--save-merged=true",)), ("full", ()),
                                          ("qlora", ())])
def test_fsdp_shards_every_parameter_as_a_dtensor(tuning, extra, trainer_job):
    evidence = trainer_job(*flags("fsdp", tuning, *extra)).metrics["strategy_evidence"]
    assert evidence["placements"] == ["(Shard(dim=0),)"]
    assert evidence["dtensor_params"] == evidence["params"] > 0
    assert evidence["fsdp_units"] == 3  # one per transformer block (2), and the root


@pytest.mark.parametrize("strategy,tuning,extra", [
    ("zero1", "lora", ()), ("zero2", "lora", ()), ("zero3", "lora", ("--save-merged=true",)),
    ("zero3", "full", ()), ("zero2", "qlora", ()), ("zero3", "qlora", ())])
def test_zero_runs_a_deepspeed_engine_at_the_requested_stage(strategy, tuning, extra,
                                                              trainer_job):
    m = trainer_job(*flags(strategy, tuning, *extra)).metrics
    stage = int(strategy[-1])
    evidence = m["strategy_evidence"]
    assert m["model_wrapper"] == "DeepSpeedEngine"
    assert evidence["deepspeed_stage"] == stage
    assert evidence["partition_gradients"] is (stage >= 2)
    # ZeRO-3 partitions the weights themselves; stages 1 and 2 leave them whole.
    assert evidence["partitioned_params"] == (evidence["params"] if stage == 3 else 0)
    assert evidence["optimizer"] == ("DeepSpeedZeroOptimizer_Stage3" if stage == 3
                                     else "DeepSpeedZeroOptimizer")
    assert evidence["offload_optimizer"] is None and evidence["offload_param"] is None
    # ZeRO-3 routes every plain linear through zero3_linear: all 7 per block in full
    # fine-tuning, LoRA's base layers and adapters, QLoRA's adapters (never its 4-bit base
    # layers); lm_head in every case.
    blocks = 2 * 7
    expected = {"full": blocks + 1, "lora": blocks + 2 * blocks + 1, "qlora": 2 * blocks + 1}
    assert evidence["referenced_linears"] == (expected[tuning] if stage == 3 else 0)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "zero2", "zero3"])
def test_qlora_trains_on_a_4bit_nf4_double_quant_base(strategy, trainer_job):
    m = trainer_job(*flags(strategy, "qlora")).metrics
    q = m["quantization"]
    assert q["linear4bit_layers"] == 2 * 7  # 2 blocks x q k v o gate up down
    assert (q["quant_type"], q["double_quant"], q["compute_dtype"]) == ("nf4", True, "float32")
    # Sharded strategies need the packed weights stored in the float dtype they shard.
    assert q["storage_dtype"] == ("float32" if strategy in ("fsdp", "zero3") else "uint8")
    # Sharded: each of the 2 ranks holds half of the 4-bit weights (rows split, so up to a
    # row's bytes more); replicated: all of them.
    held = m["quantized_bytes"]
    if strategy in ("fsdp", "zero3"):
        assert abs(held["local"] - held["whole"] / 2) <= 4 * 14
    else:
        assert held["local"] == held["whole"] > 0


def test_every_strategy_computes_the_same_losses(trainer_job):
    """Same data, seed and math: the strategies differ in where the numbers live, not in
    what they are (fp32 on CPU; ZeRO-3 and FSDP reduce in another order, hence the tolerance)."""
    ddp = trainer_job(*flags("ddp")).metrics["losses"]
    for strategy in ("fsdp", "zero1", "zero2", "zero3"):
        extra = ("--save-merged=true",) if strategy in ("fsdp", "zero3") else ()
        assert trainer_job(*flags(strategy, "lora", *extra)).metrics["losses"] == \
            pytest.approx(ddp, rel=1e-4), strategy


def test_sharded_qlora_computes_the_losses_of_replicated_qlora(trainer_job):
    """FSDP and ZeRO-3 split the 4-bit weights over the ranks (quantized_bytes, above) and
    still compute what ddp computes with every rank holding all of them."""
    ddp = trainer_job(*flags("ddp", "qlora")).metrics["losses"]
    for strategy in ("fsdp", "zero3"):
        assert trainer_job(*flags(strategy, "qlora")).metrics["losses"] == \
            pytest.approx(ddp, rel=1e-4), strategy
