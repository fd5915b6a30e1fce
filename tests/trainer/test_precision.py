"""--precision: updates too small for bf16 still move the weights under the default (fp32
masters) and under bf16-kahan, as an fp32 AdamW run moves them, and do not move them under
pure bf16 (the control), through each strategy's own engine and optimizer.

The weights are stored in the dtype the policy picks on a GPU (`trained_dtype(..., bf16)`);
only the compute stays on the CPU. Each gradient is independent of the weights and exactly
representable in bf16, so every run sees the same gradients as the fp32 reference
(torch.optim.AdamW in fp32, written here, not the code under test).
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from mgft.spec.job import Precision, Strategy, TrainSpec, Tuning
from mgft_train import model, optim, parallel, precision
from mgft_train.checks import check_precision
from mgft_train.distributed import Dist
from mgft_train.errors import UsageError
from mgft_train.precision import KahanAdamW, MasterAdamW

from tests.trainer.cases import flags

BF16, FP32 = torch.bfloat16, torch.float32
STEPS = 200
LR = 2e-4
# Weights in [1.25, 1.75] stay in [1, 2) however they move here, where bf16's spacing is
# 2^-7 (7.8e-3): an AdamW step is at most about LR, 1/20 of half that spacing, so a bf16
# weight rounds every single update away.
SPACING = 2.0**-7
# Tolerances against the fp32 reference, from that spacing:
#   mixed: the weight is the bf16 nearest to an fp32 master that follows the reference up to
#     fp32 rounding: half a spacing.
#   bf16-kahan: half a spacing for the last rounding, plus the compensation's own rounding (it
#     is bf16: 2^-9 of at most half a spacing per step, 200 x 2^-10 = 0.2 spacing at worst),
#     plus bf16 exp_avg (2^-9 relative, on 3 spacings of movement: 0.01): 0.71 spacing.
TOLERANCE = {Precision.MIXED: SPACING / 2 + 1e-6, Precision.BF16_KAHAN: 0.75 * SPACING}
CPU = torch.device("cpu")
ONE = Dist(rank=0, local_rank=0, world_size=1, device=CPU, backend="none")


class Probe(torch.nn.Module):
    """loss = sum(weight * c): the gradient is c, whatever the weight."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return (self.weight * c.to(self.weight.dtype)).sum()


def spec(strategy: Strategy, setting: Precision, **kw) -> TrainSpec:
    return TrainSpec(model="m", dataset="d", strategy=strategy, tuning=Tuning.FULL, lr=LR,
                     precision=setting, **kw)


def initial_weights() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (1.25 + 0.5 * torch.rand(8, 64, generator=g)).to(BF16).to(FP32)


def gradients(shape: torch.Size) -> list[torch.Tensor]:
    """A fixed sign per weight, magnitudes 2^-6 x (1 + k/8): exact in bf16, norm under 1
    (no clipping)."""
    g = torch.Generator().manual_seed(1)
    sign = torch.randint(0, 2, shape, generator=g) * 2.0 - 1
    return [sign * 2.0**-6 * (1 + torch.randint(0, 8, shape, generator=g) / 8)
            for _ in range(STEPS)]


@pytest.fixture
def gloo_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield Dist(rank=0, local_rank=0, world_size=1, device=CPU, backend="gloo")
    dist.destroy_process_group()


def train(engine, grads: list[torch.Tensor]) -> list[float]:
    """The loop's calls for each step (loop.train_step, then engine.step); the lr of each."""
    lrs = []
    for c in grads:
        lrs.append(engine.lr())
        with engine.accumulating(last=True), engine.computing():
            loss = engine.model(c)
        engine.backward(loss)
        engine.step()
    return lrs


def reference(w0: torch.Tensor, grads: list[torch.Tensor], lrs: list[float]) -> torch.Tensor:
    w = w0.clone().requires_grad_()
    opt = torch.optim.AdamW([w], lr=LR, weight_decay=0.0, foreach=False)
    for c, lr in zip(grads, lrs, strict=True):
        w.grad = c.clone()
        torch.nn.utils.clip_grad_norm_([w], optim.MAX_GRAD_NORM)
        opt.param_groups[0]["lr"] = lr
        opt.step()
    return w.detach()


def weights(engine) -> torch.Tensor:
    w = engine.base.weight.detach()
    return (w.full_tensor() if hasattr(w, "full_tensor") else w).to(FP32)


def run(strategy: Strategy, setting: Precision, ctx: Dist):
    stored = precision.trained_dtype(spec(strategy, setting), BF16)  # as on a GPU
    w0 = initial_weights()
    engine = parallel.apply(Probe(w0.to(stored)), spec(strategy, setting), ctx, total=STEPS)
    grads = gradients(w0.shape)
    lrs = train(engine, grads)
    return engine, w0, weights(engine), reference(w0, grads, lrs)


RUNS = [(Strategy.DDP, Precision.MIXED), (Strategy.DDP, Precision.BF16_KAHAN),
        (Strategy.MP, Precision.MIXED), (Strategy.MP, Precision.BF16_KAHAN)]


@pytest.mark.parametrize("strategy,setting", RUNS, ids=lambda x: x.value)
def test_updates_below_bf16_resolution_move_the_weights_like_fp32(strategy, setting):
    engine, w0, w, ref = run(strategy, setting, ONE)
    assert (ref - w0).abs().min() > 2 * SPACING  # the reference moved: a stuck run fails
    assert (w - ref).abs().max() <= TOLERANCE[setting]
    assert engine.base.weight.dtype is BF16  # the model computes with bf16 weights


@pytest.mark.parametrize("setting", [Precision.MIXED, Precision.BF16_KAHAN],
                         ids=lambda x: x.value)
def test_fsdp_moves_its_shards_like_fp32(setting, gloo_group):
    _, w0, w, ref = run(Strategy.FSDP, setting, gloo_group)
    assert (ref - w0).abs().min() > 2 * SPACING
    assert (w - ref).abs().max() <= TOLERANCE[setting]


@pytest.mark.parametrize("strategy", [Strategy.DDP, Strategy.MP, Strategy.FSDP],
                         ids=lambda x: x.value)
def test_pure_bf16_loses_every_such_update(strategy, request):
    ctx = request.getfixturevalue("gloo_group") if strategy is Strategy.FSDP else ONE
    engine, w0, w, ref = run(strategy, Precision.BF16, ctx)
    assert (ref - w0).abs().min() > 2 * SPACING
    assert torch.equal(w, w0)  # the control: not one weight moved
    assert type(engine.optimizer) is torch.optim.AdamW


def test_the_policy_stores_weights_and_picks_optimizers_per_strategy():
    cases = {  # (strategy, tuning, setting) -> (trained weights on a GPU, optimizer)
        (Strategy.DDP, Tuning.FULL, Precision.MIXED): (BF16, MasterAdamW),
        (Strategy.MP, Tuning.FULL, Precision.MIXED): (BF16, MasterAdamW),
        (Strategy.FSDP, Tuning.FULL, Precision.MIXED): (FP32, torch.optim.AdamW),
        # DeepSpeed's ZeRO optimizer keeps the fp32 masters and steps the AdamW on them
        (Strategy.ZERO2, Tuning.FULL, Precision.MIXED): (BF16, torch.optim.AdamW),
        (Strategy.DDP, Tuning.LORA, Precision.MIXED): (FP32, torch.optim.AdamW),
        (Strategy.FSDP, Tuning.QLORA, Precision.MIXED): (FP32, torch.optim.AdamW),
        (Strategy.DDP, Tuning.FULL, Precision.BF16_KAHAN): (BF16, KahanAdamW),
        (Strategy.FSDP, Tuning.LORA, Precision.BF16_KAHAN): (BF16, KahanAdamW),
        (Strategy.DDP, Tuning.FULL, Precision.BF16): (BF16, torch.optim.AdamW),
        (Strategy.FSDP, Tuning.FULL, Precision.BF16): (BF16, torch.optim.AdamW),
    }
    for (strategy, tuning, setting), (dtype, kind) in cases.items():
        s = TrainSpec(model="m", dataset="d", strategy=strategy, tuning=tuning,
                      precision=setting)
        assert precision.trained_dtype(s, BF16) is dtype, (strategy, tuning, setting)
        # CPUs: fp32 weights, their own master copy, whatever the setting
        assert precision.trained_dtype(s, FP32) is FP32
        weight = torch.nn.Parameter(torch.ones(2, dtype=dtype))
        assert type(optim.make_optimizer([weight], s, CPU)) is kind, (strategy, tuning, setting)
        # the base a LoRA adapter sits on is frozen: loaded in bf16 on a GPU
        loaded = dtype if tuning is Tuning.FULL else BF16
        assert model.param_dtype(torch.device("cuda", 0), s) is loaded


def test_kahan_adamw_is_torch_adamw_on_fp32_weights():
    """Its AdamW arithmetic, checked where rounding cannot hide a mistake: fp32 weights,
    weight decay on, several tensors."""
    g = torch.Generator().manual_seed(2)
    start = [torch.randn(5, 7, generator=g), torch.randn(3, generator=g)]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    theirs = [torch.nn.Parameter(t.clone()) for t in start]
    mine = KahanAdamW(ours, lr=1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=0.1, foreach=False)
    for _ in range(20):
        grads = [torch.randn(t.shape, generator=g) for t in start]
        for p, q, grad in zip(ours, theirs, grads, strict=True):
            p.grad, q.grad = grad.clone(), grad.clone()
        mine.step()
        ref.step()
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("setting", [Precision.MIXED, Precision.BF16_KAHAN],
                         ids=lambda x: x.value)
def test_a_resumed_run_continues_exactly(setting, tmp_path):
    """The masters (mixed) and the compensation and fp32 exp_avg_sq (kahan) survive a
    checkpoint: torch casts loaded optimizer states to the weights' dtype (bf16) unless told."""
    s = spec(Strategy.DDP, setting)
    grads = gradients(torch.Size([8, 64]))[:40]
    straight = parallel.apply(Probe(initial_weights().to(BF16)), s, ONE, total=40)
    train(straight, grads)

    first = parallel.apply(Probe(initial_weights().to(BF16)), s, ONE, total=40)
    train(first, grads[:20])
    first.save_state(tmp_path)
    second = parallel.apply(Probe(initial_weights().to(BF16)), s, ONE, total=40)
    second.load_state(tmp_path)
    train(second, grads[20:])
    assert torch.equal(weights(second), weights(straight))
    if setting is Precision.BF16_KAHAN:
        state = second.optimizer.state[second.base.weight]
        assert state["exp_avg_sq"].dtype is FP32 and state["compensation"].abs().max() > 0


def test_metrics_record_what_ran():
    kahan = parallel.apply(Probe(initial_weights().to(BF16)), spec(Strategy.DDP,
                           Precision.BF16_KAHAN), ONE, total=2)
    mixed = parallel.apply(Probe(initial_weights().to(BF16)), spec(Strategy.DDP,
                           Precision.MIXED), ONE, total=2)
    for engine in (kahan, mixed):
        train(engine, gradients(torch.Size([8, 64]))[:2])
    assert precision.describe(spec(Strategy.DDP, Precision.MIXED), mixed) == {
        "setting": "mixed", "weights": "bfloat16", "compute": "bfloat16",
        "master_weights": "float32", "optimizer": "MasterAdamW",
        "optimizer_states": {"exp_avg": "float32", "exp_avg_sq": "float32"}}
    assert precision.describe(spec(Strategy.DDP, Precision.BF16_KAHAN), kahan) == {
        "setting": "bf16-kahan", "weights": "bfloat16", "compute": "bfloat16",
        "master_weights": None, "optimizer": "KahanAdamW",
        "optimizer_states": {"exp_avg": "bfloat16", "exp_avg_sq": "float32",
                             "compensation": "bfloat16"}}


def test_a_trainer_started_by_hand_refuses_bf16_weights_under_zero():
    with pytest.raises(UsageError) as err:
        check_precision(TrainSpec(model="m", dataset="d", strategy=Strategy.ZERO3,
                                  precision=Precision.BF16))
    assert str(err.value) == (
        "--precision bf16: --strategy zero3 steps DeepSpeed's ZeRO optimizer, which always "
        "keeps fp32 master weights; use --precision mixed with ZeRO, or --strategy ddp, fsdp "
        "or mp for bf16 weights")
    for strategy in (Strategy.DDP, Strategy.FSDP, Strategy.MP):
        check_precision(TrainSpec(model="m", dataset="d", strategy=strategy,
                                  precision=Precision.BF16_KAHAN))


@pytest.mark.e2e
@pytest.mark.parametrize("strategy,tuning,master", [("ddp", "lora", "float32"),
                                                    ("zero3", "full", "float32")])
def test_a_cpu_job_records_its_fp32_weights(strategy, tuning, master, trainer_job):
    """CPUs train in fp32 under every setting, and metrics.json says so (ZeRO's master is
    read from DeepSpeed's own partitions)."""
    record = trainer_job(*flags(strategy, tuning)).metrics["precision"]
    assert record["setting"] == "mixed"
    assert (record["weights"], record["compute"], record["master_weights"]) == (
        "float32", "float32", master)
