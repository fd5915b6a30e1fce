"""Which strategies fit, the largest micro-batch, and the recommendation."""

from __future__ import annotations

import dataclasses

import pytest
from mgft.plan.arch import KNOWN
from mgft.plan.memory import GIB, Assumptions, Job, estimate
from mgft.plan.pick import PREFERENCE, Budget, candidates, make_plan, max_micro_batch
from mgft.spec.job import Strategy, Tuning

A8 = KNOWN["llama-3-8b"]


def test_usable_memory_by_hand() -> None:
    assert Budget(gpu_memory_gib=80, margin=0.1, overhead_gib=1.5).usable == (72 - 1.5) * GIB
    assert Budget(gpu_memory_gib=141, margin=0, overhead_gib=0).usable == 141 * GIB


@pytest.mark.parametrize("strategy", [Strategy.DDP, Strategy.ZERO2, Strategy.FSDP, Strategy.MP])
@pytest.mark.parametrize("tuning", list(Tuning))
def test_largest_micro_batch_is_the_boundary(strategy: Strategy, tuning: Tuning) -> None:
    job = Job(arch=A8, tuning=tuning, gpus_per_node=4, seq_len=2048)
    budget = Budget(gpu_memory_gib=80)
    m = max_micro_batch(job, strategy, budget, Assumptions())
    peak = {b: estimate(dataclasses.replace(job, micro_batch=b), strategy).peak
            for b in (max(m, 1), m + 1)}
    if m > 0:
        assert peak[m] <= budget.usable
    assert peak[m + 1] > budget.usable


def test_nothing_fits_and_everything_fits() -> None:
    huge = Job(arch=KNOWN["llama-3-70b"], tuning=Tuning.FULL, gpus_per_node=1, seq_len=8192)
    plan = make_plan(huge, Budget(gpu_memory_gib=80))
    assert plan.choice is None and all(r.max_micro_batch == 0 for r in plan.rows)
    assert plan.reason.startswith("nothing fits")
    tiny = Job(arch=KNOWN["llama-3.2-1b"], tuning=Tuning.LORA, gpus_per_node=2, micro_batch=1,
               seq_len=128)
    plan = make_plan(tiny, Budget(gpu_memory_gib=4096, margin=0))
    assert plan.choice is Strategy.DDP and all(r.max_micro_batch == 4096 for r in plan.rows)


def test_full_8b_on_eight_80g_gpus_shards_and_says_why() -> None:
    job = Job(arch=A8, tuning=Tuning.FULL, gpus_per_node=8, micro_batch=2, seq_len=1024)
    plan = make_plan(job, Budget(gpu_memory_gib=80))
    # bf16 weights + grads + fp32 AdamW and masters + DDP buckets: 18 bytes x 8.03 B = 135 GiB
    assert not plan.row(Strategy.DDP).fits
    assert plan.choice is Strategy.ZERO2
    assert "zero2" in plan.reason and "too big: ddp" in plan.reason
    assert f"up to {plan.row(Strategy.ZERO2).max_micro_batch} fit" in plan.reason


# 8.03 B parameters on 4 GPUs, 1 x 128 tokens, so that activations are small next to the
# weights, worked out by hand from bytes per parameter (bf16 weights 2, bf16 grads 2, fp32
# master + Adam moments 12; usable memory = 0.9 x GiB - 1.5):
# - LoRA: a frozen bf16 replica, ~15 GiB (+ embeddings' adapters, a few MB): DDP fits 24 GiB
#   (20.1 usable). QLoRA: 4-bit base ~3.7 GiB + bf16 embeddings and head ~2 GiB: DDP anywhere.
# - full DDP: 16 bytes + 2 of DDP's gradient buckets = 134.6 GiB: fits nowhere up to 141 GiB
#   (125.4 usable). ZeRO-2: at most 2 + 2 + 12/4 = 7 bytes = 52.3 GiB: fits 80 GiB (70.5) and
#   141. At 24 GiB every sharded state is over 4 x 8.03 B = 29.9 GiB: only zero3-offload,
#   whose parameters and optimizer live in host memory, fits.
# Sizes close to a boundary (40 and 48 GiB for full) are left to the boundary test above.
BY_HAND = [(Tuning.LORA, gib, Strategy.DDP) for gib in (24, 40, 48, 80, 141)] + [
    (Tuning.QLORA, gib, Strategy.DDP) for gib in (24, 40, 48, 80, 141)] + [
    (Tuning.FULL, 24, Strategy.ZERO3_OFFLOAD), (Tuning.FULL, 80, Strategy.ZERO2),
    (Tuning.FULL, 141, Strategy.ZERO2)]


@pytest.mark.parametrize("tuning,gib,expected", BY_HAND)
def test_choice_matches_the_bytes_per_parameter_worked_out_by_hand(
        tuning: Tuning, gib: int, expected: Strategy) -> None:
    job = Job(arch=A8, tuning=tuning, gpus_per_node=4, micro_batch=1, seq_len=128)
    assert make_plan(job, Budget(gpu_memory_gib=gib)).choice is expected


@pytest.mark.parametrize("gib", [24, 40, 48, 80, 141])
@pytest.mark.parametrize("tuning", list(Tuning))
def test_more_memory_never_picks_a_strategy_further_down_the_preference(
        gib: int, tuning: Tuning) -> None:
    job = Job(arch=A8, tuning=tuning, gpus_per_node=4, micro_batch=4, seq_len=2048)
    rank = {s: i for i, s in enumerate(PREFERENCE)}
    here = make_plan(job, Budget(gpu_memory_gib=gib)).choice
    more = make_plan(job, Budget(gpu_memory_gib=gib * 2)).choice
    if here is not None:
        assert more is not None and rank[more] <= rank[here]


def test_mp_needs_two_gpus_per_node_and_can_be_excluded() -> None:
    one = Job(arch=A8, gpus_per_node=1, nodes=4)
    assert Strategy.MP not in candidates(one)
    four = dataclasses.replace(one, gpus_per_node=4)
    assert Strategy.MP in candidates(four)
    assert Strategy.MP not in candidates(four, exclude=frozenset({Strategy.MP}))
    assert Strategy.AUTO not in candidates(four)
