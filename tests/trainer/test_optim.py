from __future__ import annotations

import math

import pytest
from mgft.spec.job import TrainSpec
from mgft_train import optim


def spec(**kw) -> TrainSpec:
    return TrainSpec(model="m", dataset="d", **kw)


def test_max_steps_wins_over_epochs_and_epochs_round_up():
    assert optim.total_steps(spec(max_steps=7, epochs=3.0), batches_per_epoch=100) == 7
    assert optim.total_steps(spec(epochs=2.0, grad_accum=3), batches_per_epoch=10) == 7
    assert optim.total_steps(spec(epochs=0.5), batches_per_epoch=9) == 5
    assert optim.total_steps(spec(epochs=0.01), batches_per_epoch=1) == 1


def test_lr_warms_up_linearly_then_decays_to_the_floor():
    total = 100
    warmup = optim.warmup_steps(total)
    assert warmup == 3
    factors = [optim.lr_factor(s, total, warmup) for s in range(total)]
    assert factors[:warmup] == pytest.approx([1 / 3, 2 / 3, 1.0])
    after = factors[warmup:]
    assert after[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))
    assert after[-1] == pytest.approx(optim.MIN_LR_RATIO, abs=1e-3)
    assert min(factors) >= optim.MIN_LR_RATIO


def test_scheduler_follows_the_factor_and_optimizer_holds_only_trainable_params():
    import torch

    frozen, trained = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    frozen.requires_grad_(False)
    opt = optim.make_optimizer([frozen, trained], spec(lr=0.5), torch.device("cpu"))
    assert opt.param_groups[0]["params"] == [trained]
    sched = optim.make_scheduler(opt, total=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # Written from the documented schedule, not from lr_factor: one warm-up step at the peak
    # (0.5), then a cosine from the peak down to 10% of it over the 9 steps after warm-up.
    cosine = [0.05 + 0.45 * 0.5 * (1 + math.cos(math.pi * k / 9)) for k in range(9)]
    assert lrs == pytest.approx([0.5, *cosine])
    assert lrs[1] == pytest.approx(0.5) and lrs[-1] == pytest.approx(0.05 + 0.225 * (
        1 + math.cos(8 * math.pi / 9)))
