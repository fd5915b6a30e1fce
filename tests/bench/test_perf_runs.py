"""bench/perf_runs.py: run names, the matrix, FLOPs per token, batch matching, the shared
throughput rule and the loss-curve comparison."""

from __future__ import annotations

from pathlib import Path

import pytest
from mgft.plan.arch import KNOWN, Arch
from perf_runs import (
    Assets,
    Run,
    default_configs,
    flops_per_token,
    loss_curve,
    loss_gap,
    match_micro_batch,
    matrix,
    mean_context,
    micro_batch,
    steady_tokens_per_s,
    summarize,
)

# tiny.PRESETS["tiny"] with the bench tokenizer's 512 ids.
TINY = Arch(name="tiny", family="llama", vocab=512, hidden=64, intermediate=128, layers=2,
            heads=4, kv_heads=2, head_dim=16, tied=False)


def test_flops_per_token_of_the_tiny_llama_by_hand():
    # One layer's Linears: q 64x64 + k 64x32 + v 64x32 + o 64x64 + gate, up, down 64x128 each
    # = 4096 + 2048 + 2048 + 4096 + 3 * 8192 = 36,864; two layers 73,728; lm_head 512 x 64
    # = 32,768: N = 106,496.
    n = 106_496
    # LoRA r=16, A is r x in and B is out x r: sum(in + out) over the 7 = 128 + 96 + 96 + 128
    # + 192 + 192 + 192 = 1,024 per layer; x 16 x 2 layers = 32,768.
    lora = 32_768
    # Attention: QK^T and AV, 2 FLOPs per multiply-add, q_dim 64, 2 layers, 3x for backward.
    ctx = 10.0
    attention = 3 * 2 * 2 * 2 * 64 * ctx
    full = flops_per_token(TINY, "full", 16, ctx)
    assert full["matmul_params"] == n
    assert full["total"] == 6 * n + attention == 654_336
    low = flops_per_token(TINY, "lora", 16, ctx)
    assert low["lora_params"] == lora
    assert low["total"] == 4 * n + 6 * lora + attention == 637_952


def test_flops_per_token_of_llama_3_8b_match_the_notes():
    """The usual 6N estimate: about 30 GFLOP per token for 8B LoRA and 45 for full
    fine-tuning; samples uniform in 128-1024 tokens."""
    ctx = mean_context(range(128, 1025))
    assert 340 < ctx < 350  # E[L^2] / (2 E[L]) + 1/2 for the uniform lengths
    lora = flops_per_token(KNOWN["llama-3-8b"], "lora", 16, ctx)["total"] / 1e9
    full = flops_per_token(KNOWN["llama-3-8b"], "full", 16, ctx)["total"] / 1e9
    assert lora == pytest.approx(30, rel=0.04)
    assert full == pytest.approx(45, rel=0.02)
    assert full > lora


def test_mean_context_counts_each_tokens_causal_keys():
    assert mean_context([1]) == 1
    assert mean_context([2]) == 1.5  # keys 1 and 2
    assert mean_context([1, 3]) == pytest.approx((1 + 1 + 2 + 3) / 4)


def test_micro_batch_matches_the_recipes_tokens_per_step():
    # 8 rows of 576 tokens = 4,608 per GPU step; packs of 990: 5 packs = 4,950 (+7%).
    assert match_micro_batch(576, 990) == 5
    assert abs(5 * 990 / (8 * 576) - 1) < 0.10
    assert match_micro_batch(73, 122) == 5
    assert match_micro_batch(100, 1000) == 1  # 0.8 rounds to one pack
    assert match_micro_batch(10, 1000) == 1  # never zero


@pytest.mark.parametrize("name", ["mgft-lora-ddp-4g", "base-full-fsdp-4g",
                                  "mgft-lora-ddp-1g@nokernels", "mgft-lora-zero3-offload-2g",
                                  "mgft-full-fsdp-4g@nopack+ckpt", "base-lora-zero2-4g@nockpt"])
def test_run_names_round_trip(name):
    assert Run.parse(name).name == name


def test_run_name_parts_and_flags():
    run = Run.parse("mgft-lora-ddp-1g@nokernels+nopack")
    assert (run.impl, run.tuning, run.strategy, run.gpus) == ("mgft", "lora", "ddp", 1)
    assert run.config == "lora-ddp-1g"
    assert run.flags == ["--kernels", "none", "--no-packing"]
    assert not run.packing
    assert Run.parse("mgft-lora-zero3-offload-2g").strategy == "zero3-offload"
    assert Run.parse("base-lora-ddp-4g@nockpt").flags == ["--checkpointing", "off"]
    assert not Run.parse("base-lora-ddp-4g").packing  # the recipe never packs


@pytest.mark.parametrize("name, words", [
    ("lora-ddp-4g", "expected <impl>"), ("mgft-lora-ddp-4", "expected <impl>"),
    ("trl-lora-ddp-4g", "impl 'trl'"), ("mgft-dora-ddp-4g", "tuning 'dora'"),
    ("mgft-lora-ddp-0g", "0 GPUs"), ("mgft-lora-ddp-1g@fast", "ablation 'fast'"),
    ("base-lora-ddp-1g@nokernels", "applies to mgft runs only"),
    ("mgft-lora-ddp-1g@nockpt", "applies to base runs only"),
])
def test_bad_run_names_say_what_and_how(name, words):
    with pytest.raises(ValueError, match=words):
        Run.parse(name)


def test_default_matrix_is_issue_7s():
    assert default_configs(4) == ["lora-ddp-1g", "lora-ddp-2g", "lora-ddp-4g", "lora-zero2-4g",
                                  "lora-zero3-4g", "lora-fsdp-4g", "full-fsdp-4g"]
    assert default_configs(1)[0] == "lora-ddp-1g"
    runs = matrix(["lora-ddp-4g", "full-fsdp-4g"])
    assert [r.name for r in runs] == ["mgft-lora-ddp-4g", "base-lora-ddp-4g",
                                      "mgft-full-fsdp-4g", "base-full-fsdp-4g"]


def test_steady_throughput_drops_the_first_fifth_of_steps():
    step_s = [10.0, 5.0] + [1.0] * 8
    step_tokens = [100] * 10
    assert steady_tokens_per_s(step_s, step_tokens) == 100  # 8 steps of 1 s kept
    assert steady_tokens_per_s([2.0] * 4, [10] * 4) == 5  # under 5 steps: nothing dropped
    assert steady_tokens_per_s(([9.0] * 5) + [1.0] * 30, [7] * 35) == 7  # at most 5 dropped


def test_loss_curve_is_cumulative_tokens():
    assert loss_curve([3.0, 2.0, 1.5], [10, 20, 30]) == [(10, 3.0), (30, 2.0), (60, 1.5)]


def test_loss_gap_of_equal_shifted_and_differently_sampled_curves():
    a = loss_curve([5.0, 4.0, 3.5, 3.2, 3.0, 2.9], [100] * 6)
    assert loss_gap(a, a) == 0
    higher = [(x, y * 1.1) for x, y in a]
    assert loss_gap(higher, a) == pytest.approx(0.1)
    # The same straight line, sampled at other token counts: interpolation finds no gap.
    line = [(x, 10 - x / 100) for x in range(100, 700, 100)]
    other = [(x, 10 - x / 100) for x in range(150, 700, 130)]
    assert loss_gap(other, line) == pytest.approx(0, abs=1e-12)
    # Only the second half of the common range counts: a gap early on is not seen.
    early = [(x, y + (1 if x <= 300 else 0)) for x, y in a]
    assert loss_gap(early, a) == 0
    assert loss_gap([], a) is None


def assets() -> Assets:
    return Assets(model_dir=Path("m"), data=Path("d"), lengths=[100, 300], mean_pack=980.0,
                  flops={"lora": {"total": 30e9}, "full": {"total": 45e9}})


MATMUL = {"n": 8192, "devices": [{"device": f"cuda:{i}", "dtype": "bfloat16",
                                  "tflops": t} for i, t in enumerate((800, 780, 790, 770))]}


def test_summary_of_an_mgft_run_without_per_step_records():
    """metrics.json of mgft as of issue 7: its own steady figure, no per-step lists."""
    metrics = {"world_size": 2, "steps": 4, "tokens": 40_000, "tokens_per_s_after_warmup": 18_000,
               "losses": [11.0, 10.0, 9.0, 8.5], "first_loss": 11.0, "last_loss": 8.5,
               "peak_memory_per_device": [{"rank": 0, "device": "cuda:0", "bytes": 40 * 2**30},
                                          {"rank": 1, "device": "cuda:1", "bytes": 41 * 2**30}],
               "first_step_at": 1000.0 + 25.5, "strategy": "ddp", "kernels": ["rms_norm", "rope"],
               "activation_checkpointing": False}
    run = Run.parse("mgft-lora-ddp-2g@nokernels")
    row = summarize(run, metrics, assets(), MATMUL, 1000.0, arch="llama-3-8b", seq_len=1024)
    assert row["tokens_per_s_per_gpu"] == 9_000
    assert row["mfu"] == pytest.approx(9_000 * 30e9 / 790e12)  # GPUs 0 and 1 only
    assert row["tokens_per_step"] == 10_000 and row["tokens_per_step_per_gpu"] == 5_000
    assert row["loss_curve"] == [(10_000, 11.0), (20_000, 10.0), (30_000, 9.0), (40_000, 8.5)]
    assert row["time_to_first_step_s"] == 25.5
    assert row["peak_gib_max"] == 41 and row["ran_as_requested"]
    assert row["config"] == {
        "arch": "llama-3-8b", "tuning": "lora", "strategy": "ddp", "gpus": 2,
        "micro_batch": 2,  # 8 rows of 200 tokens in packs of 980: 1.6 -> 2
        "grad_accum": 1, "seq_len": 1024, "kernels": "none", "kernels_used": "rms_norm,rope",
        "packing": True, "activation_checkpointing": False, "lora_r": 16,
        "peak_gib_per_gpu": 41}


def test_summary_of_a_recipe_run_uses_its_step_records():
    metrics = {"world_size": 4, "steps": 10, "tokens": 10 * 4000,
               "step_s": [30.0, 9.0] + [1.0] * 8, "step_tokens": [4000] * 10,
               "tokens_per_s_after_warmup": 4000.0, "losses": [5.0] * 10, "first_loss": 5.0,
               "last_loss": 5.0, "first_step_at": None, "strategy": "fsdp",
               "peak_memory_per_device": [{"bytes": 2**30}] * 4, "recipe": {"x": 1}}
    row = summarize(Run.parse("base-full-fsdp-4g"), metrics, assets(), None, 0.0,
                    arch="llama-3-8b", seq_len=1024)
    assert row["tokens_per_s_per_gpu"] == 1000  # the two slow steps left out
    assert row["mfu"] is None and row["time_to_first_step_s"] is None  # nothing to divide by
    assert row["recipe"] == {"x": 1} and "config" not in row
    assert micro_batch(Run.parse("mgft-lora-ddp-1g@nopack"), assets()) == 8


def test_tuned_recipe_qlora_and_fp8_runs():
    """Issue 19's sides: the tuned recipe packs mgft's micro-batch of packs, the QLoRA runs
    count LoRA's model FLOPs, and fp8 is mgft's --kernels fp8."""
    tuned = Run.parse("base-lora-ddp-1g@tuned")
    assert tuned.tuned and tuned.packing and tuned.flags == ["--recipe", "tuned"]
    assert not Run.parse("base-lora-ddp-1g").tuned
    a = assets()  # mean length 200, packs of 980: mgft's micro-batch is 2 packs
    assert micro_batch(tuned, a) == micro_batch(Run.parse("mgft-lora-ddp-1g"), a) == 2
    assert micro_batch(Run.parse("base-qlora-ddp-1g"), a) == 2  # the guides' 2 x 4 rows
    fp8 = Run.parse("mgft-lora-ddp-1g@fp8")
    assert fp8.flags == ["--kernels", "fp8"] and fp8.name == "mgft-lora-ddp-1g@fp8"
    assert Run.parse("mgft-qlora-ddp-1g@ckpt").flags == ["--activation-checkpointing"]
    with pytest.raises(ValueError, match="applies to base runs only"):
        Run.parse("mgft-lora-ddp-1g@tuned")
    lora, qlora = (flops_per_token(TINY, t, 8, 50.0) for t in ("lora", "qlora"))
    assert qlora == lora  # same multiplications; dequantizing is not model FLOPs
