"""Per-strategy arithmetic: hand-computed cases, sharding by the world size, monotonicity."""

from __future__ import annotations

import dataclasses

import pytest
from mgft.plan.activations import activation_bytes
from mgft.plan.arch import KNOWN, Arch
from mgft.plan.memory import ALL, Assumptions, Breakdown, Job, batch, estimate
from mgft.spec import Strategy, Tuning

SMALL = Arch(name="small", family="llama", vocab=1000, hidden=64, intermediate=128, layers=2,
             heads=4, kv_heads=2, head_dim=16, tied=False)
P = SMALL.params
A = Assumptions()


def job(**kw) -> Job:
    return Job(**{"arch": SMALL, "tuning": Tuning.FULL, "gpus_per_node": 2} | kw)


def act(j: Job, s: Strategy) -> float:
    return activation_bytes(batch(j, s, A))


def test_ddp_full_by_hand() -> None:
    j = job()
    b = estimate(j, Strategy.DDP)
    # bf16 weights, bf16 grads, AdamW's two bf16 states, the reducer's bf16 bucket copy
    assert (b.params, b.grads, b.optimizer, b.buffers) == (2 * P, 2 * P, 4 * P, 2 * P)
    assert b.peak == 8 * P + max(act(j, Strategy.DDP), 2 * P)
    single = estimate(job(gpus_per_node=1), Strategy.DDP)
    assert single.buffers == 0  # one process is not wrapped in DDP: no buckets


def test_ddp_lora_and_qlora_by_hand() -> None:
    lora = SMALL.lora_params(16)
    b = estimate(job(tuning=Tuning.LORA), Strategy.DDP)
    # frozen bf16 base; fp32 adapters (peft), their fp32 grads, two fp32 Adam states, bucket
    assert (b.params, b.grads, b.optimizer, b.buffers) == (
        2 * P + 4 * lora, 4 * lora, 8 * lora, 4 * lora)
    q = estimate(job(tuning=Tuning.QLORA), Strategy.DDP)
    nf4 = 0.5 + 1 / 64 + 4 / (64 * 256)
    linear = SMALL.layers * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128)
    assert q.params == pytest.approx(nf4 * linear + 2 * (P - linear) + 4 * lora)
    assert q.buffers == 4 * lora + 2 * 64 * 128  # + one Linear dequantized to bf16


def test_zero_stages_by_hand() -> None:
    j = job(gpus_per_node=4)
    z1, z2, z3 = (estimate(j, s) for s in (Strategy.ZERO1, Strategy.ZERO2, Strategy.ZERO3))
    # fp32 master weights + Adam's two fp32 states, sharded over 4 ranks
    assert z1.optimizer == z2.optimizer == z3.optimizer == 12 * P / 4
    assert (z1.params, z1.grads) == (2 * P, 2 * P)
    assert (z2.params, z2.grads) == (2 * P, 2 * P / 4)
    assert (z3.params, z3.grads) == (2 * P / 4, 2 * P / 4)
    assert z1.step_extra == z2.step_extra == z3.step_extra == 4 * P / 4  # fp32 grad partition
    assert z2.buffers == 2 * P  # the reduce bucket, capped by what there is to reduce
    assert z3.grads_in_forward and not z2.grads_in_forward
    off = estimate(j, Strategy.ZERO3_OFFLOAD)
    assert (off.params, off.grads, off.optimizer) == (0, 0, 0)
    assert off.host == 2 * P / 4 + 12 * P / 4 + 2 * P / 4


def test_fsdp_and_mp_by_hand() -> None:
    j = job(gpus_per_node=4)
    f = estimate(j, Strategy.FSDP)
    assert (f.params, f.grads, f.optimizer) == (2 * P / 4, 2 * P / 4, 4 * P / 4)
    root = 2 * (SMALL.embed_params + SMALL.head_params) * 3 / 4
    two_layers = 2 * 2 * SMALL.layer_params * 3 / 4
    assert f.buffers == pytest.approx(root + two_layers + 2 * P / SMALL.layers)
    m = estimate(j, Strategy.MP)
    assert (m.params, m.grads, m.optimizer, m.buffers) == (2 * P / 4, 2 * P / 4, 4 * P / 4, 0)


@pytest.mark.parametrize("strategy,fields", [
    (Strategy.ZERO3, ("params", "grads", "optimizer")),
    (Strategy.FSDP, ("params", "grads", "optimizer")),
    (Strategy.ZERO2, ("grads", "optimizer")),
    (Strategy.ZERO1, ("optimizer",)),
])
@pytest.mark.parametrize("tuning", list(Tuning))
def test_sharded_terms_divide_by_the_world_size(strategy, fields, tuning) -> None:
    one = estimate(Job(arch=KNOWN["llama-3-8b"], tuning=tuning), strategy)
    for gpus, nodes in ((2, 1), (8, 1), (8, 8)):
        many = estimate(Job(arch=KNOWN["llama-3-8b"], tuning=tuning, gpus_per_node=gpus,
                            nodes=nodes), strategy)
        for name in fields:
            assert getattr(many, name) * gpus * nodes == pytest.approx(getattr(one, name))
        assert many.activations == one.activations  # data parallel: same micro-batch


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize("tuning", list(Tuning))
def test_peak_grows_with_the_batch_and_not_with_more_gpus(strategy, tuning) -> None:
    """Non-decreasing rather than growing: when the end of the backward pass is the peak (full
    fine-tuning's gradients), a bigger batch only raises the other moment."""
    base = Job(arch=KNOWN["llama-3-8b"], tuning=tuning, gpus_per_node=2, micro_batch=2,
               seq_len=512)
    b = estimate(base, strategy)
    for bigger in (dict(micro_batch=3), dict(seq_len=1024)):
        grown = estimate(dataclasses.replace(base, **bigger), strategy)
        assert grown.activations > b.activations and grown.peak >= b.peak
    if tuning is not Tuning.FULL:
        assert estimate(dataclasses.replace(base, lora_r=64), strategy).peak > b.peak
    if strategy is not Strategy.DDP:  # DDP replicates; everything else holds less on more GPUs
        assert estimate(dataclasses.replace(base, gpus_per_node=8), strategy).peak <= b.peak
    ckpt = estimate(dataclasses.replace(base, checkpointing=True), strategy)
    assert ckpt.activations < b.activations and ckpt.peak <= b.peak


def test_peak_is_the_larger_moment_of_a_step() -> None:
    b = Breakdown(strategy=Strategy.DDP, params=10, grads=5, optimizer=20, activations=30,
                  buffers=1)
    assert b.peak == 61  # end of forward: activations, no gradients yet
    assert dataclasses.replace(b, grads_in_forward=True).peak == 66
    assert dataclasses.replace(b, step_extra=100).peak == 136  # the optimizer step


def test_gradient_accumulation_keeps_gradients_through_the_forward_pass() -> None:
    one, two = (estimate(job(grad_accum=k), Strategy.DDP) for k in (1, 2))
    assert not one.grads_in_forward and two.grads_in_forward
    assert two.peak == one.peak - max(one.activations, one.grads) + one.activations + one.grads


def test_assumptions_change_what_they_should() -> None:
    j = Job(arch=KNOWN["llama-3-8b"], tuning=Tuning.FULL, gpus_per_node=8)
    small = dataclasses.replace(A, zero_bucket=50_000_000)
    assert estimate(j, Strategy.ZERO2, small).buffers == 2 * 50_000_000
    assert estimate(j, Strategy.ZERO2).buffers == 2 * 500_000_000
    unpadded = dataclasses.replace(A, padded=False)
    assert estimate(j, Strategy.DDP, unpadded).activations < estimate(j, Strategy.DDP).activations
